"""Replays and rollbacks are exported as records: bounded by the tenant and by when they were
made, each replayed call with its decision, outcome, differences and flag, the versions replays
were pinned to among the policy versions, and their ledger content redacted like the recorded
calls' (declared labels and tenant rules included)."""

from __future__ import annotations

import tarfile
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from core import signing
from core.services import grant_role
from exports.sections import SECTION_BY_NAME
from exports.verify import verify_bundle
from operations.models import Replay, ReplayStep, Rollback
from operations.replay_compare import compare_outputs
from policies.models import Decision, Policy
from policies.services import ProposedCall, create_draft, decide_tool_call, publish_policy_version
from runs.models import RedactionRule, Run, ToolCall

LONG_AGO = datetime(2001, 1, 1, tzinfo=UTC)


def records_of(bundle: Any) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The manifest and the (type, data) of every record of a bundle."""
    with tarfile.open(bundle) as tar:
        manifest = orjson.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        data = tar.extractfile("records.jsonl").read()  # type: ignore[union-attr]
    records = [orjson.loads(line) for line in data.splitlines()]
    return manifest, [(r["type"], r["data"]) for r in records]


def of_type(records: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [data for type_, data in records if type_ == kind]


def _version(tenant, author, note: str):
    publisher = User.objects.get_or_create(username=f"publisher-{tenant.slug}")[0]
    grant_role(publisher, "manage_policies", tenant)
    policy, _ = Policy.objects.get_or_create(tenant=tenant, name="tools")
    return publish_policy_version(create_draft(policy, by=author, change_note=note), by=publisher)


def _stored(tenant, record, make_run) -> tuple[Run, list[ToolCall]]:
    run = make_run(tenant.slug)
    record(tenant, run)
    stored = Run.objects.get(tenant=tenant, run_id=run["run_id"])
    return stored, list(ToolCall.objects.filter(run=stored).select_related("tool")
                        .order_by("seq"))


def _replay(tenant, by, run, calls, version, steps: int = 2, **fields) -> Replay:
    replay = Replay.objects.create(tenant=tenant, run=run, policy_version=version,
                                   requested_by=by, requested_by_label=str(by), **fields)
    for seq, call in enumerate(calls[:steps], start=1):
        replayed = {"changed": seq}
        ReplayStep.objects.create(
            tenant=tenant, replay=replay, seq=seq, call_id=call.call_id, tool=call.tool,
            mode_used="dry_run", status="succeeded", output=replayed, attempts=1,
            divergence=compare_outputs(call.output, replayed, []), flagged=seq == 1)
    return replay


@pytest.fixture
def scene(acme, globex, alice, charlie, record, make_run) -> dict[str, Any]:
    """acme: a replay and a rollback made now, another of each made in 2001 (outside the
    window), each replay pinned to its own version; globex: a replay and a rollback now."""
    run, calls = _stored(acme, record, make_run)
    pinned_now, pinned_long_ago = _version(acme, alice, "v1"), _version(acme, alice, "v2")
    _version(acme, alice, "v3")  # in force: the decision below refers to it, not to v1 or v2
    decision = decide_tool_call(acme, ProposedCall(tool=calls[0].tool.name,
                                                   action_class=calls[0].action_class,
                                                   arguments={}, run_id=run.run_id),
                                asked_by="replay")
    now_replay = _replay(acme, alice, run, calls, pinned_now, mode="sandbox", until_step=3,
                         status="succeeded", steps_total=2, steps_done=2, divergent_steps=2,
                         started_at=timezone.now(), finished_at=timezone.now())
    ReplayStep.objects.filter(replay=now_replay, seq=1).update(
        decision=decision, follow_up="expected", follow_up_note="a new field, fine",
        follow_up_by_label="alice", follow_up_at=timezone.now())
    old_replay = _replay(acme, alice, run, calls, pinned_long_ago, steps=1)
    Replay.objects.filter(pk=old_replay.pk).update(created_at=LONG_AGO)
    now_rollback = Rollback.objects.create(
        tenant=acme, tool_call=calls[0], run=run, idempotency_key="rb-1", status="partial",
        attempts=2, attempt_log=[{"result": "error"}, {"result": "partial"}],
        outcome={"undone": ["charge"]}, remaining_side_effects=[{"effect": "email sent"}],
        requested_by=alice, requested_by_label="alice", started_at=timezone.now(),
        finished_at=timezone.now())
    old_rollback = Rollback.objects.create(tenant=acme, tool_call=calls[1], run=run,
                                           idempotency_key="rb-2", status="succeeded")
    Rollback.objects.filter(pk=old_rollback.pk).update(created_at=LONG_AGO)
    globex_run, globex_calls = _stored(globex, record, make_run)
    _replay(globex, charlie, globex_run, globex_calls, _version(globex, charlie, "g1"))
    Rollback.objects.create(tenant=globex, tool_call=globex_calls[0], run=globex_run,
                            idempotency_key="rb-g", status="failed")
    return {"run": run, "calls": calls, "replay": now_replay, "old_replay": old_replay,
            "rollback": now_rollback, "old_rollback": old_rollback, "decision": decision,
            "pinned": pinned_now, "pinned_long_ago": pinned_long_ago}


def _window() -> tuple[datetime, datetime]:
    now = timezone.now()
    return now - timedelta(days=1), now + timedelta(days=1)


def test_replays_and_rollbacks_made_in_the_window_are_records_of_the_export(
        scene, acme, alice, export_now, bundle_of):
    export = export_now(acme, alice, window=_window())
    assert export.status == "done", export.error
    bundle = bundle_of(export)
    assert verify_bundle(bundle, signing.public_key_b64()).ok
    manifest, records = records_of(bundle)

    [replay] = of_type(records, "replay")
    assert replay == {
        "id": scene["replay"].pk, "pk": scene["replay"].pk, "run_id": scene["run"].run_id,
        "mode": "sandbox",
        "until_step": 3, "policy": "tools", "policy_version": scene["pinned"].number,
        "status": "succeeded", "steps_total": 2, "steps_done": 2, "divergent_steps": 2,
        "failure_reason": "", "requested_by": "alice", "approval_id": None,
        "created_at": replay["created_at"], "started_at": replay["started_at"],
        "finished_at": replay["finished_at"]}
    assert replay["created_at"].endswith("Z")
    assert replay["finished_at"]

    steps = of_type(records, "replay_step")
    assert [(s["replay_id"], s["seq"]) for s in steps] == [(scene["replay"].pk, 1),
                                                           (scene["replay"].pk, 2)]
    first = steps[0]
    assert first["call_id"] == scene["calls"][0].call_id
    assert first["run_id"] == scene["run"].run_id
    assert first["tool"] == scene["calls"][0].tool.name
    assert (first["decision_id"], first["decision_effect"]) == (scene["decision"].pk,
                                                                scene["decision"].effect)
    assert (first["status"], first["mode_used"], first["flagged"]) == ("succeeded", "dry_run",
                                                                       True)
    assert first["output"] == {"changed": 1}
    assert (first["follow_up"], first["follow_up_note"], first["follow_up_by"]) == (
        "expected", "a new field, fine", "alice")
    assert first["follow_up_at"].endswith("Z")
    assert {d["path"] for d in first["divergence"]} >= {"$.changed"}
    assert steps[1]["flagged"] is False
    assert steps[1]["decision_id"] is None

    [rollback] = of_type(records, "rollback")
    assert rollback["id"] == scene["rollback"].pk
    assert rollback["call_id"] == scene["calls"][0].call_id
    assert rollback["run_id"] == scene["run"].run_id
    assert (rollback["status"], rollback["attempts"]) == ("partial", 2)
    assert rollback["remaining_side_effects"] == [{"effect": "email sent"}]
    assert rollback["outcome"] == {"undone": ["charge"]}
    assert rollback["attempt_log"] == [{"result": "error"}, {"result": "partial"}]
    assert rollback["started_at"]
    assert rollback["finished_at"]
    assert rollback["created_at"]

    # The counts by type in the (signed) manifest, and the version the replay was pinned to.
    assert manifest["records"]["replay"] == 1
    assert manifest["records"]["replay_step"] == 2
    assert manifest["records"]["rollback"] == 1
    assert export.counts == manifest["records"]
    versions = {v["id"] for v in of_type(records, "policy_version")}
    assert scene["pinned"].pk in versions
    assert scene["pinned_long_ago"].pk not in versions  # only its replay (2001) pinned it
    assert scene["pinned"].pk in {v["id"] for v in manifest["policy_versions"]}
    assert not Decision.objects.filter(policy_version=scene["pinned"]).exists()


def test_replays_and_rollbacks_of_another_window_or_tenant_are_not_exported(
        scene, acme, alice, export_now, bundle_of):
    _, records = records_of(bundle_of(export_now(acme, alice, window=_window())))
    assert scene["old_replay"].pk not in {r["id"] for r in of_type(records, "replay")}
    assert {s["replay_id"] for s in of_type(records, "replay_step")} == {scene["replay"].pk}
    assert {r["id"] for r in of_type(records, "rollback")} == {scene["rollback"].pk}
    body = orjson.dumps(records)
    assert b"globex" not in body
    assert b"charlie" not in body

    # The window of 2001 holds the replay and rollback made then, with the replay's steps
    # and its pinned version (the run itself started in another window).
    _, old = records_of(bundle_of(export_now(
        acme, alice, window=(LONG_AGO - timedelta(days=1), LONG_AGO + timedelta(days=1)))))
    assert [r["id"] for r in of_type(old, "replay")] == [scene["old_replay"].pk]
    assert [s["replay_id"] for s in of_type(old, "replay_step")] == [scene["old_replay"].pk]
    assert [r["id"] for r in of_type(old, "rollback")] == [scene["old_rollback"].pk]
    assert [v["id"] for v in of_type(old, "policy_version")] == [scene["pinned_long_ago"].pk]
    assert of_type(old, "run") == []


def test_every_query_of_the_new_sections_is_bounded_by_the_tenant(scene, acme, globex):
    class Window:
        tenant_id = globex.pk
        window_from, window_to = _window()

    for name in ("replay", "replay_step", "rollback"):
        rows = SECTION_BY_NAME[name].queryset(Window())
        assert rows.exists()
        assert set(rows.values_list("tenant_id", flat=True)) == {globex.pk}


def test_a_replayed_output_and_its_differences_are_redacted_with_the_recorded_calls_labels(
        acme, alice, record, make_run, export_now, bundle_of):
    """Values no detector would find, labelled by the agent (``output.customer``) or by a
    tenant rule (``$.output.ticket``), are redacted in the replayed output and on both sides of
    its differences, as they are in the recorded call."""
    run = make_run()
    call = run["tool_calls"][0]
    call["output"] = {"customer": {"name": "Ada Lovelace"}, "ticket": "harbour-lantern",
                      "ok": True, "owners": [{"name": "Grace Hopper"}, {"name": "Alan Kay"}]}
    call["classifications"] = {"output.customer": "confidential",
                               "output.owners[*].name": "confidential"}
    record(acme, run)
    RedactionRule.objects.create(tenant=acme, pattern="$.output.ticket", label="secret")
    stored = Run.objects.get(tenant=acme, run_id=run["run_id"])
    recorded = ToolCall.objects.get(tenant=acme, call_id=call["call_id"])
    replay = Replay.objects.create(tenant=acme, run=stored, requested_by_label="alice")
    replayed = {"customer": {"name": "Ada Byron"}, "ticket": "quiet-meadow", "ok": False,
                "owners": [{"name": "Grace Hopper"}, {"name": "Edsger Dijkstra"}]}
    ReplayStep.objects.create(
        tenant=acme, replay=replay, seq=1, call_id=recorded.call_id, tool=recorded.tool,
        mode_used="live", status="succeeded", output=replayed, flagged=True,
        divergence=compare_outputs(recorded.output, replayed, []))

    export = export_now(acme, alice)
    _, records = records_of(bundle_of(export))
    body = orjson.dumps(records)
    for value in (b"Ada Lovelace", b"Ada Byron", b"harbour-lantern", b"quiet-meadow",
                  b"Grace Hopper", b"Alan Kay", b"Edsger Dijkstra"):
        assert value not in body
    [step] = of_type(records, "replay_step")
    assert step["classifications"] == call["classifications"]
    assert step["output"]["customer"]["redacted"] == "confidential"
    assert step["output"]["ticket"]["redacted"] == "secret"
    assert step["output"]["ok"] is False
    by_path = {d["path"]: d for d in step["divergence"]}
    assert by_path["$.customer.name"]["recorded"]["redacted"] == "confidential"
    assert by_path["$.customer.name"]["replayed"]["redacted"] == "confidential"
    assert by_path["$.ticket"]["recorded"]["redacted"] == "secret"
    assert by_path["$.ticket"]["replayed"]["redacted"] == "secret"
    assert by_path["$.owners[1].name"]["replayed"]["redacted"] == "confidential"  # [*]
    assert (by_path["$.ok"]["recorded"], by_path["$.ok"]["replayed"]) == (True, False)

    # Unredacted (its own permission, justified), the values are there: the test can see them.
    unredacted = export_now(acme, alice, redaction_level="none", justification="legal hold 3")
    body = orjson.dumps(records_of(bundle_of(unredacted))[1])
    assert b"Ada Byron" in body
    assert b"harbour-lantern" in body
