"""A redacted output never carries a hash of what it hides.

``content_hash`` and ``chain_hash`` are unsalted SHA-256 over the unredacted record: a reader
who sees one and can guess the hidden value (a card number with a known BIN and last four is a
hundred thousand guesses) confirms the guess offline in a second. So every face that redacts
(API, ``ledger show`` text and JSON, ``ledger annotate``, the timeline page, the admin change
and list pages, strict and standard exports, integrity alarms) shows keyed commitments instead:
HMAC-SHA256 under the tenant's commitment key, which only the portal holds and a
``view_unredacted`` auditor can be given. Read unredacted, the hashes are shown as they are.
"""

from __future__ import annotations

import hmac
import tarfile
from hashlib import sha256

import orjson
import pytest
from django.urls import reverse

from core.cli_support import EXIT_OK
from ledger_portal.cli import main
from runs.commitments import commitment_key, rotate_commitment_key
from runs.models import Annotation, IntegrityAlarm, ModelCall, Run, Step, ToolCall

from ..exports.conftest import WINDOW, bundle_of, export_dirs, export_now  # noqa: F401 (fixtures)

CARD = "4539 1488 0343 6467"
RUN_ID = "card-run"


@pytest.fixture
def card_run(acme, record):
    record(acme, {
        "run_id": RUN_ID, "agent_id": "billing-agent", "goal": "refund the order",
        "status": "succeeded", "started_at": "2026-10-01T08:59:00Z",
        "ended_at": "2026-10-01T09:01:00Z",
        "steps": [{"step_id": "s1", "index": 1, "title": "charge back", "status": "done",
                   "started_at": "2026-10-01T09:00:00Z"}],
        "model_calls": [{"call_id": "m1", "step_id": "s1", "provider": "openai",
                         "model": "gpt-4o", "messages": [{"role": "user",
                                                          "content": f"card {CARD}"}],
                         "started_at": "2026-10-01T09:00:00Z"}],
        "tool_calls": [{"call_id": "t1", "step_id": "s1", "tool": "refund_payment",
                        "action_class": "write", "input": {"card": CARD, "amount": 12},
                        "output": {"ok": True}, "status": "succeeded",
                        "started_at": "2026-10-01T09:00:01Z"}],
        "annotations": [{"annotation_id": "n1", "kind": "note",
                         "body": f"customer read out {CARD}"}],
    })
    return Run.objects.get(run_id=RUN_ID)


def _hashes(run: Run) -> set[str]:
    """Every hash of the run's unredacted content the ledger keeps, and the 16-character prefix
    a text face would shorten each to."""
    found = {run.head_hash}
    for model in (Step, ModelCall, ToolCall, Annotation):
        for content, chain in model.objects.filter(run=run).values_list("content_hash",
                                                                         "chain_hash"):
            found |= {content, chain}
    return found | {h[:16] for h in found}


def _leaked(text: str, run: Run) -> set[str]:
    return {h for h in _hashes(run) if h in text}


@pytest.mark.parametrize("level", ["strict", "standard"])
def test_the_api_shows_no_hash_of_redacted_content(card_run, alice, user_client, level):
    api = user_client(alice)
    for url in (f"/api/v1/runs/{RUN_ID}/", "/api/v1/runs/", "/api/v1/tool-calls/",
                "/api/v1/tool-calls/t1/"):
        answer = api.get(url, {"redaction": level, "tenant": "acme"})
        assert answer.status_code == 200, (url, answer.content[:300])
        assert not _leaked(answer.content.decode(), card_run), url
    made = api.post(f"/api/v1/runs/{RUN_ID}/annotations/?tenant=acme&redaction={level}",
                    {"body": "looked at it", "kind": "note"}, format="json")
    assert made.status_code == 201, made.content
    card_run.refresh_from_db()
    assert not _leaked(made.content.decode(), card_run)


def test_read_unredacted_the_api_shows_the_hashes_themselves(card_run, alice, user_client):
    detail = user_client(alice).get(f"/api/v1/runs/{RUN_ID}/",
                                    {"redaction": "none", "tenant": "acme"}).json()
    call = next(e for e in detail["timeline"] if e["kind"] == "tool_call")
    assert call["chain_hash"] == ToolCall.objects.get(call_id="t1").chain_hash
    assert detail["head_hash"] == card_run.head_hash
    assert call["commitment"] is None


def test_a_redacted_api_record_carries_commitments_under_the_tenant_key(acme, card_run, alice,
                                                                        user_client):
    detail = user_client(alice).get(f"/api/v1/runs/{RUN_ID}/", {"tenant": "acme"}).json()
    call = next(e for e in detail["timeline"] if e["kind"] == "tool_call")
    stored = ToolCall.objects.get(call_id="t1")
    key = commitment_key(acme)
    assert call["chain_hash"] is None
    assert call["commitment"]["key"] == key.key_id

    def commit(label: str, value: str) -> str:
        return hmac.new(bytes(key.secret), f"{label}:{value}".encode(), sha256).hexdigest()

    # The key turns the ledger's own hashes into the commitments, and a field's raw value into
    # its field commitment: what an auditor given the key can check.
    assert call["commitment"]["record"] == commit("record", stored.content_hash)
    assert call["commitment"]["chain"] == commit("chain", stored.chain_hash)
    raw_input = orjson.dumps(stored.input, option=orjson.OPT_SORT_KEYS).decode()
    assert call["commitment"]["fields"] == {"input": commit("field:input", raw_input)}
    assert detail["commitment"]["head"] == commit("chain", card_run.head_hash)


def test_rotating_the_key_changes_every_commitment_and_is_recorded(acme, card_run, alice,
                                                                    user_client):
    api = user_client(alice)
    before = api.get(f"/api/v1/runs/{RUN_ID}/", {"tenant": "acme"}).json()["commitment"]
    old = commitment_key(acme)
    new = rotate_commitment_key(acme, by=alice)
    after = api.get(f"/api/v1/runs/{RUN_ID}/", {"tenant": "acme"}).json()["commitment"]
    assert new.generation == old.generation + 1
    assert after["key"] == new.key_id != before["key"]
    assert after["head"] != before["head"]
    old.refresh_from_db()
    assert old.retired_at is not None
    assert Annotation.objects.filter(tenant=acme, data__event="commitment_key_rotated",
                                     data__generation=new.generation).exists()


@pytest.mark.parametrize("level", ["strict", "standard"])
def test_ledger_show_text_and_json_show_no_hash(card_run, alice, capsys, level):
    for extra in ([], ["--json"]):
        assert main(["--as", "alice", "show", RUN_ID, "--redaction-level", level,
                     *extra]) == EXIT_OK
        assert not _leaked(capsys.readouterr().out, card_run), extra


def test_ledger_annotate_shows_no_chain_hash(card_run, alice, capsys):
    assert main(["--as", "alice", "annotate", RUN_ID, "--body", "checked", "--json"]) == EXIT_OK
    out = capsys.readouterr().out
    card_run.refresh_from_db()
    assert not _leaked(out, card_run)
    assert "commitment" in orjson.loads(out)


def test_the_timeline_page_shows_no_hash(card_run, alice, client):
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", RUN_ID])).content.decode()
    assert CARD not in page
    assert not _leaked(page, card_run)


def test_admin_change_and_list_pages_show_no_hash(card_run, alice, client):
    client.force_login(alice)
    for model in (Run, Step, ModelCall, ToolCall, Annotation):
        name = model._meta.model_name
        pk = model.objects.filter(tenant=card_run.tenant).values_list("pk", flat=True).first()
        for url in (reverse(f"admin:runs_{name}_changelist"),
                    reverse(f"admin:runs_{name}_change", args=[pk])):
            page = client.get(url)
            assert page.status_code == 200, url
            assert not _leaked(page.content.decode(), card_run), url


def test_integrity_alarms_show_no_head_hash(acme, card_run, alice, user_client, client):
    IntegrityAlarm.objects.create(tenant=acme, run_id=RUN_ID, seq=card_run.last_seq,
                                  found_head=card_run.head_hash, signed_seq=1,
                                  signed_head=ToolCall.objects.get(call_id="t1").chain_hash,
                                  digest_number=1, detail="rewritten")
    answer = user_client(alice).get("/api/v1/integrity-alarms/", {"tenant": "acme"})
    assert answer.status_code == 200
    assert not _leaked(answer.content.decode(), card_run)
    client.force_login(alice)
    for url in (reverse("admin:runs_integrityalarm_changelist"),
                reverse("admin:runs_integrityalarm_change",
                        args=[IntegrityAlarm.objects.get().pk])):
        assert not _leaked(client.get(url).content.decode(), card_run), url


@pytest.mark.parametrize("level", ["strict", "standard"])
def test_a_redacted_export_carries_no_hash_and_still_verifies(card_run, alice,
                                                              export_now, bundle_of,  # noqa: F811
                                                              level):
    from core.signing import public_key_b64
    from exports.verify import verify_bundle

    export = export_now(card_run.tenant, alice, window=WINDOW, redaction_level=level)
    bundle = bundle_of(export)
    with tarfile.open(bundle) as tar:
        files = {m.name: _read(tar, m) for m in tar.getmembers() if m.isfile()}
    assert not _leaked(b"".join(files.values()).decode("utf-8", "replace"), card_run)
    manifest = orjson.loads(files["manifest.json"])
    assert manifest["verification"]["commitments"]["key"] == commitment_key(
        card_run.tenant).key_id
    assert "redacted" in manifest["verification"]["offline"]
    assert verify_bundle(bundle, public_key=public_key_b64()).ok


def test_an_approvals_action_hash_is_shown_only_as_a_commitment(acme, card_run, alice,
                                                                user_client, client, capsys,
                                                                export_now,  # noqa: F811
                                                                bundle_of):  # noqa: F811
    """The action hash binds an approval to the call's arguments: a hash of them, so the same
    guessing works on it. The vote's annotation, the admin and redacted exports commit to it."""
    from approvals.models import ApprovalRequest
    from approvals.services import decide_approval, request_approval

    request = request_approval(acme, tool="refund_payment", action_class="write",
                               arguments={"card": CARD}, run_id=RUN_ID, call_id="t2",
                               requested_by="agent")
    decide_approval(request, by=alice, approve=True, justification="checked")
    action = ApprovalRequest.objects.get().action_hash
    card_run.refresh_from_db()
    api = user_client(alice)
    shown = api.get(f"/api/v1/runs/{RUN_ID}/", {"tenant": "acme"}).content.decode()
    assert action not in shown
    assert action[:16] not in shown
    assert main(["--as", "alice", "show", RUN_ID, "--json"]) == EXIT_OK
    assert action not in capsys.readouterr().out
    client.force_login(alice)
    page = client.get(reverse("admin:approvals_approvalrequest_change", args=[request.pk]))
    assert page.status_code == 200
    assert action not in page.content.decode()
    with tarfile.open(bundle_of(export_now(acme, alice, window=WINDOW))) as tar:
        text = b"".join(_read(tar, m) for m in tar.getmembers()
                        if m.isfile()).decode("utf-8", "replace")
    assert action not in text
    assert commitment_key(acme).key_id in text


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo | str) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()


def test_a_removal_record_shows_the_removed_heads_only_as_commitments(acme, card_run, alice,
                                                                     client):
    from datetime import timedelta

    from django.utils import timezone

    from runs.models import RemovalRecord
    from runs.retention import apply_retention

    acme.retention_days = 30
    acme.save()
    head = card_run.head_hash
    apply_retention(acme, timezone.now() + timedelta(days=3650))
    removal = RemovalRecord.objects.get(tenant=acme)
    assert removal.removed_runs[RUN_ID][1] == head
    client.force_login(alice)
    for url in (reverse("admin:runs_removalrecord_changelist"),
                reverse("admin:runs_removalrecord_change", args=[removal.pk])):
        page = client.get(url).content.decode()
        assert head[:16] not in page, url  # nor the whole head, which begins so
        assert removal.record_hash not in page, url
