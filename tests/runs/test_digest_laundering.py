"""A rewrite of a run with every hash recomputed (what a superuser with the signing job at hand
could do) is never laundered by the next digest: the sealer refuses to sign a head that differs
from what an earlier digest signed, raises an integrity alarm instead, and ``ledger verify``
checks every digest, not only the newest one per run."""

from __future__ import annotations

from typing import Any

import orjson

from core import signing
from core.canonical import canonical_json, content_hash
from core.cli_support import EXIT_TAMPERED
from ledger_portal.cli import main
from runs.integrity import RECORD_MODELS, seal_tenant_digest, verify_tenant
from runs.models import IntegrityAlarm, Run, TenantDigest, ToolCall

from .test_tamper_detection import bypassing_triggers, calls
from .test_tamper_detection import ledger as ledger


def rewrite_with_recomputed_hashes(run: Run, target: ToolCall, new_input: Any) -> str:
    """Change ``target``'s input and recompute every hash after it, the run's head included,
    as an insider bypassing the triggers would; return the new head."""
    records = sorted((r for model in RECORD_MODELS for r in model.objects.filter(run=run)),
                     key=lambda r: r.seq)
    previous = run.chain_hash
    with bypassing_triggers() as cursor:
        for record in records:
            if record.seq < target.seq:
                previous = record.chain_hash
                continue
            if record.pk == target.pk and type(record) is ToolCall:
                record.input = new_input
                cursor.execute("UPDATE runs_toolcall SET input = %s WHERE id = %s",
                               [orjson.dumps(new_input).decode(), record.pk])
            previous = record.seal(previous)
            cursor.execute(f"UPDATE {record._meta.db_table} SET content_hash = %s, "
                           "chain_hash = %s WHERE id = %s",
                           [record.content_hash, record.chain_hash, record.pk])
        cursor.execute("UPDATE runs_run SET head_hash = %s, tip_moved_at = now() WHERE id = %s"
                       if cursor.db.vendor == "postgresql" else
                       "UPDATE runs_run SET head_hash = %s, tip_moved_at = CURRENT_TIMESTAMP "
                       "WHERE id = %s", [previous, run.pk])
    return previous


def signed_like_the_old_sealer(tenant: Any, heads: dict[str, list[Any]]) -> TenantDigest:
    """A digest that signs ``heads`` with the portal's key, as the sealer before this change
    did for any head that had moved."""
    last = TenantDigest.objects.filter(tenant=tenant).order_by("-number").first()
    assert last is not None
    digest = TenantDigest(tenant=tenant, number=last.number + 1, created_at=last.created_at,
                          covered_until=last.covered_until, run_heads=heads,
                          previous_hash=last.digest_hash)
    digest.digest_hash = content_hash(digest.signed_content(tenant.slug))
    digest.public_key = signing.public_key_b64()
    digest.key_id = signing.key_id(digest.public_key)
    digest.signature = signing.sign(canonical_json(digest.signed_content(tenant.slug)))
    digest.save()
    return digest


def test_the_sealer_never_signs_a_rewritten_head_and_raises_an_alarm(acme, ledger):
    seal_tenant_digest(acme)
    target = calls(ledger)[2]
    forged = rewrite_with_recomputed_hashes(ledger, target, {"amount_cents": 1})
    digest = seal_tenant_digest(acme)
    assert digest is None or ledger.run_id not in digest.run_heads
    assert not any(forged == head for d in TenantDigest.objects.filter(tenant=acme)
                   for _, head in d.run_heads.values())
    alarm = IntegrityAlarm.objects.get(tenant=acme, run_id=ledger.run_id)
    assert alarm.found_head == forged
    assert alarm.seq == ledger.last_seq
    # the next beat raises no second alarm for the same forged head
    seal_tenant_digest(acme)
    assert IntegrityAlarm.objects.filter(tenant=acme).count() == 1
    report = verify_tenant(acme)
    assert [(b.run_id, b.problem) for b in report.breaks] == [(ledger.run_id, "digest")]


def test_a_rewrite_extended_by_a_new_record_is_not_signed_either(acme, ledger, record,
                                                                   make_run):
    seal_tenant_digest(acme)
    target = calls(ledger)[1]
    rewrite_with_recomputed_hashes(ledger, target, {"amount_cents": 2})
    # the insider also bumps the head past what was signed, so the seq differs
    last = calls(ledger)[-1]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_run SET last_seq = %s WHERE id = %s",
                       [last.seq, ledger.pk])
    seal_tenant_digest(acme)
    assert IntegrityAlarm.objects.filter(tenant=acme, run_id=ledger.run_id).exists()


def test_verify_checks_every_digest_not_only_the_newest(acme, ledger, alice, capsys):
    first = seal_tenant_digest(acme)
    assert first is not None
    target = calls(ledger)[2]
    forged = rewrite_with_recomputed_hashes(ledger, target, {"amount_cents": 3})
    signed_like_the_old_sealer(acme, {ledger.run_id: [ledger.last_seq, forged]})
    report = verify_tenant(acme)
    assert not report.intact
    assert {b.run_id for b in report.breaks} == {ledger.run_id}
    assert any("re-signed" in b.detail for b in report.breaks)
    assert main(["--as", "alice", "verify", "--tenant", "acme", "--quiet"]) == EXIT_TAMPERED
    assert f"BROKEN run {ledger.run_id}" in capsys.readouterr().out


def test_an_alarm_is_shown_by_the_api_and_the_admin(acme, ledger, alice, charlie, client):
    from rest_framework.test import APIClient

    seal_tenant_digest(acme)
    rewrite_with_recomputed_hashes(ledger, calls(ledger)[2], {"amount_cents": 5})
    seal_tenant_digest(acme)
    api = APIClient()
    api.force_authenticate(alice)
    body = api.get("/api/v1/integrity-alarms/").json()
    assert [a["run_id"] for a in body["results"]] == [ledger.run_id]
    api.force_authenticate(charlie)
    assert api.get("/api/v1/integrity-alarms/").json()["results"] == []
    client.force_login(alice)
    page = client.get("/admin/").content.decode()
    assert "integrity alarm" in page.lower()
    assert ledger.run_id in page
    client.force_login(charlie)
    assert ledger.run_id not in client.get("/admin/").content.decode()
