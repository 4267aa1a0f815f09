"""What a strict export may contain: none of the planted secrets and personal data, wherever they
were recorded (the runs, the governance records, the replays' outputs and differences, the
rollbacks' answers), and nothing of another tenant; and the same window always gives the same
bytes, however many parts it was cut into."""

from __future__ import annotations

import hashlib
import tarfile
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from approvals.services import decide_approval, request_approval
from core import signing
from core.services import grant_role
from exports.verify import VOLATILE_MANIFEST_FIELDS, verify_bundle
from operations.models import Replay, ReplayStep, Rollback
from operations.replay_compare import compare_outputs
from policies.exceptions import request_exception
from policies.models import Policy
from policies.services import ProposedCall, create_draft, decide_tool_call, publish_policy_version
from runs.annotations import annotate
from runs.models import Run, ToolCall

from ..runs.redaction_corpus import PLANTED, SECRETS, planted_run

GLOBEX_MARKER = "GLOBEX-ONLY-7f3a9c"


def _plant(tenant, by, record, run, marker: str = "") -> None:
    """The run, plus governance records carrying planted values: an annotation, a decision, an
    approval with a vote, an exception, a policy version."""
    record(tenant, run)
    secrets = [s.value for s in SECRETS]
    annotate(tenant, "note", f"{marker} on-call pasted {secrets[5]}", run_id=run["run_id"],
             data={"pasted": secrets[6]}, by=by)
    publisher = User.objects.create_user(f"publisher-{tenant.slug}")
    grant_role(publisher, "manage_policies", tenant)
    grant_role(publisher, "approve", tenant)
    policy = Policy.objects.create(tenant=tenant, name="tools")
    version = publish_policy_version(
        create_draft(policy, by=by, change_note=f"{marker} first version {secrets[7]}"),
        by=publisher)
    decide_tool_call(tenant, ProposedCall(tool="send_email", action_class="exfil",
                                          arguments={"to": secrets[8], "note": marker},
                                          run_id=run["run_id"]), asked_by=marker)
    approval = request_approval(tenant, tool="refund", action_class="write",
                                arguments={"card": secrets[9], "why": marker},
                                run_id=run["run_id"], requested_by=f"{marker}-bot",
                                policy_version=version)
    decide_approval(approval, by=publisher, approve=False,
                    justification=f"{marker} no: {secrets[10]}")
    request_exception(tenant, by=by, tool="refund", policy_version=version,
                      justification=f"{marker} backlog {secrets[11]}", starts_at=timezone.now(),
                      ends_at=timezone.now() + timedelta(days=1))
    _plant_replay_and_rollbacks(tenant, by, run, version, marker)


def _plant_replay_and_rollbacks(tenant, by, run, version, marker: str) -> None:
    """A replay of the run pinned to ``version``, replaying every recorded call: each replayed
    output keeps the recorded one (its planted values) and adds another planted value, so the
    outputs and the differences carry the whole corpus; a failed step's error and the replay's
    failure reason carry more. Then rollbacks of the first calls, their hook's answers, attempt
    log, remaining side effects and last error carrying planted values too."""
    secrets = [s.value for s in SECRETS]
    stored = Run.objects.get(tenant=tenant, run_id=run["run_id"])
    calls = list(ToolCall.objects.filter(run=stored).select_related("tool").order_by("seq"))
    replay = Replay.objects.create(
        tenant=tenant, run=stored, policy_version=version, status="failed",
        steps_total=len(calls), steps_done=len(calls), divergent_steps=len(calls),
        failure_reason=f"{marker} the tool answered {secrets[12]}", requested_by=by,
        requested_by_label=str(by))
    for seq, call in enumerate(calls, start=1):
        replayed = {"recorded": call.output, "note": f"{marker} {secrets[seq % len(secrets)]}"}
        ReplayStep.objects.create(
            tenant=tenant, replay=replay, seq=seq, call_id=call.call_id, tool=call.tool,
            mode_used="stub", status="failed" if seq % 5 == 0 else "succeeded",
            output=replayed, divergence=compare_outputs(call.output, replayed, []),
            error=f"{marker} upstream said {secrets[(seq * 7) % len(secrets)]}"
            if seq % 5 == 0 else "", flagged=True, follow_up="expected",
            follow_up_note=f"{marker} fine, the key {secrets[(seq * 11) % len(secrets)]} rotated")
    for position, call in enumerate(calls[:4]):
        planted = [secrets[(40 + 4 * position + k) % len(secrets)] for k in range(4)]
        Rollback.objects.create(
            tenant=tenant, tool_call=call, run=stored, idempotency_key=f"rb-{call.call_id}",
            status=["succeeded", "failed", "partial", "partial"][position], attempts=2,
            attempt_log=[{"at": "2026-10-01T10:00:00Z", "result": "error",
                          "error": f"{marker} {planted[0]}"}],
            outcome={"response": {"body": planted[1], "marker": marker}},
            remaining_side_effects=[{"effect": "email sent", "to": planted[2]}],
            last_error=f"{marker} {planted[3]}", requested_by=by, requested_by_label=str(by),
            batch="b1", position=position)


@pytest.fixture
def planted(acme, globex, alice, charlie, record):
    _plant(acme, alice, record, planted_run("acme-leaky"))
    globex_run = planted_run(f"{GLOBEX_MARKER}-run")
    globex_run["goal"] = f"{GLOBEX_MARKER} {globex_run['goal']}"
    globex_run["tool_calls"][0]["input"]["marker"] = GLOBEX_MARKER
    _plant(globex, charlie, record, globex_run, GLOBEX_MARKER)


def data_of(bundle) -> bytes:
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        data = next(n for n in names if n.startswith("records.json"))
        return _read(tar, data) + _read(tar, "manifest.json")


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None
    return member.read()


def leaked(body: bytes) -> list[str]:
    text = body.decode()
    return [value for value in set(PLANTED) if value in text]


def test_a_strict_export_contains_no_planted_secret_and_nothing_of_another_tenant(
        planted, acme, alice, export_now, bundle_of):
    export = export_now(acme, alice)
    assert export.status == "done", export.error
    body = data_of(bundle_of(export))
    assert leaked(body) == []
    assert GLOBEX_MARKER.encode() not in body
    assert b'"redacted":"secret"' in body
    assert b'"redacted":"confidential"' in body
    for kind in ("run", "tool_call", "model_call", "annotation", "decision", "approval",
                 "governed_exception", "replay", "replay_step", "rollback", "policy_version"):
        assert export.counts.get(kind), f"no {kind} exported: the test would see no leak there"
    assert verify_bundle(bundle_of(export), signing.public_key_b64()).ok


def test_the_leak_test_sees_a_leak_when_there_is_one(planted, acme, alice, export_now,
                                                     bundle_of):
    export = export_now(acme, alice, redaction_level="none", justification="legal request 7")
    body = data_of(bundle_of(export))
    assert len(leaked(body)) > 100  # unredacted, the planted values are there to be found
    assert GLOBEX_MARKER.encode() not in body


def test_globex_sees_its_own_marker_and_none_of_acme(planted, globex, charlie, export_now,
                                                     bundle_of):
    body = data_of(bundle_of(export_now(globex, charlie)))
    assert GLOBEX_MARKER.encode() in body  # not redacted: the marker is no secret
    assert b"acme-leaky" not in body


def _tar_members(bundle) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        return {m.name: _read(tar, m.name) for m in tar.getmembers()}


def test_two_exports_of_the_same_window_are_byte_identical(planted, acme, alice, export_now,
                                                           bundle_of, settings):
    import orjson

    first = _tar_members(bundle_of(export_now(acme, alice)))
    second = _tar_members(bundle_of(export_now(acme, alice)))
    settings.LEDGER_EXPORT_PART_ROWS = 7  # cut into many parts, written one by one
    chunked_export = export_now(acme, alice)
    assert chunked_export.parts.count() > 10
    chunked = _tar_members(bundle_of(chunked_export))
    for name in ("records.jsonl", "records.idx"):
        assert first[name] == second[name] == chunked[name]
    manifests = [orjson.loads(m["manifest.json"]) for m in (first, second, chunked)]
    for manifest in manifests:
        for volatile in VOLATILE_MANIFEST_FIELDS:
            manifest.pop(volatile)
    assert manifests[0] == manifests[1] == manifests[2]


def test_the_whole_bundle_differs_only_by_its_signed_manifest(planted, acme, alice, export_now,
                                                               bundle_of, tmp_path):
    """Two bundles of the same window and ledger state are not byte-identical as tars, and
    legitimately so: each manifest names its own export (``export_id``), when it was generated
    (``generated_at``) and the export signed before it (``previous_export``, the tenant's chain
    of exports: the second names the first), so manifest.json and therefore manifest.sig differ.
    Everything else is the same: the data file and the index byte for byte, the tar's members
    in the same order with the same metadata, and the tar itself is a pure function of its
    members: rebuilt from the first bundle's data and the second bundle's manifest and
    signature, it is the second bundle byte for byte."""
    from pathlib import Path

    from exports import verify, writer

    first_path, second_path = (bundle_of(export_now(acme, alice)),
                               bundle_of(export_now(acme, alice)))
    first_bytes, second_bytes = first_path.read_bytes(), second_path.read_bytes()
    assert first_bytes != second_bytes
    first, second = _tar_members(first_path), _tar_members(second_path)
    assert [n for n in first if first[n] != second[n]] == ["manifest.json", "manifest.sig"]

    def headers(path: Path) -> list[tuple]:
        with tarfile.open(path) as tar:
            return [(m.name, m.mode, m.mtime, m.uid, m.gid, m.uname, m.gname, m.type)
                    for m in tar.getmembers()]
    assert headers(first_path) == headers(second_path)

    # The manifests differ only in the fields named volatile, and in those as said above.
    import orjson

    manifests = [orjson.loads(m["manifest.json"]) for m in (first, second)]
    assert {k for k in manifests[0] if manifests[0][k] != manifests[1][k]} == \
        set(VOLATILE_MANIFEST_FIELDS)
    assert manifests[1]["previous_export"]["export_id"] == manifests[0]["export_id"]

    directory = tmp_path / "rebuilt"
    directory.mkdir()
    for name in ("records.jsonl", "records.idx"):
        (directory / name).write_bytes(first[name])
    joined = writer.Joined("records.jsonl")
    rebuilt = tmp_path / "rebuilt.tar"
    sha256, size = writer.build_bundle(directory, joined, second["manifest.json"],
                                       second["manifest.sig"].decode().rstrip("\n"), rebuilt)
    assert rebuilt.read_bytes() == second_bytes
    assert (size, verify.verify_bundle(rebuilt, signing.public_key_b64()).ok) == (
        len(second_bytes), True)
    assert sha256 == hashlib.sha256(second_bytes).hexdigest()


def test_each_manifest_holds_the_signature_of_the_tenants_export_before(
        planted, acme, alice, export_now):
    first = export_now(acme, alice)
    second = export_now(acme, alice)
    assert first.manifest["previous_export"] is None
    assert second.manifest["previous_export"] == {"export_id": first.pk,
                                                  "signature": first.signature}


def test_reading_the_ledger_in_small_pages_gives_the_same_bytes(planted, acme, alice, export_now,
                                                                bundle_of, monkeypatch):
    from exports import sections

    whole = _tar_members(bundle_of(export_now(acme, alice)))
    monkeypatch.setattr(sections, "LEDGER_PAGE", 2)  # every keyset step taken many times
    monkeypatch.setattr(sections, "STREAM_CHUNK", 2)
    monkeypatch.setattr(sections, "KEYSET_PAGE", 2)
    paged = _tar_members(bundle_of(export_now(acme, alice)))
    for name in ("records.jsonl", "records.idx"):
        assert whole[name] == paged[name]
    assert paged["records.jsonl"].count(b"\n") > 20
