"""Replaying a recorded run: sandbox calls dry-runs only, live waits for a person and reuses
the original idempotency keys, outage mode forces sandbox, outputs are compared."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied

from approvals.models import ApprovalRequest, Kind
from approvals.services import decide_approval, request_approval
from operations.models import Replay, ReplayStep
from operations.replay import ReplayRefused, fail_overdue_replays, start_replay
from policies.models import Decision
from runs.models import Annotation

from .scenario import (
    RUN_ID,
    allow_everything,
    approve,
    approver,
    recorded_run,
    same_as_recorded,
    stored_run,
    walk,
    wire_tools,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(acme, record, tool_server):
    record(acme, recorded_run())
    return wire_tools(acme, tool_server)


def test_a_sandbox_replay_calls_dry_runs_only_and_stubs_tools_without_one(
        acme, alice, recorded, tool_server):
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    assert (replay.steps_done, replay.steps_total) == (3, 3)
    [lookup] = tool_server.requests_to("/lookup")
    assert lookup.header("X-Dry-Run") == "true"
    [refund] = tool_server.requests_to("/refund")
    assert refund.body == {"charge": "ch-9", "amount_cents": 500, "dry_run": True}
    assert tool_server.requests_to("/email") == []  # no dry-run: not called at all
    steps = list(ReplayStep.objects.filter(replay=replay).order_by("seq"))
    assert [s.mode_used for s in steps] == ["dry_run", "dry_run", "stub"]
    assert steps[2].output == {"sent": True, "message_id": "m-1"}


def test_every_replayed_call_gets_a_fresh_recorded_decision_in_sandbox_mode(
        acme, alice, recorded):
    version = allow_everything(acme)
    replay = walk(start_replay(stored_run(acme), by=alice, policy_version=version))
    steps = ReplayStep.objects.filter(replay=replay).order_by("seq")
    decisions: list[Any] = [s.decision for s in steps]
    assert all(isinstance(d, Decision) for d in decisions)
    assert {(d.mode, d.policy_version_id, d.run_id) for d in decisions} == {
        ("sandbox", version.pk, RUN_ID)}
    assert [d.call_id for d in decisions] == [f"{RUN_ID}-c1", f"{RUN_ID}-c2", f"{RUN_ID}-c3"]


def test_a_sandbox_replay_opens_no_approval_request_even_where_policy_wants_one(
        acme, alice, recorded):
    replay = walk(start_replay(stored_run(acme), by=alice))  # no policy: writes need approval
    assert replay.status == "succeeded"
    assert not ApprovalRequest.objects.filter(tenant=acme).exists()


def test_until_step_stops_at_the_end_of_that_plan_step(acme, alice, recorded, tool_server):
    replay = walk(start_replay(stored_run(acme), by=alice, until_step=1))
    assert (replay.status, replay.steps_done, replay.steps_total) == ("succeeded", 1, 1)
    assert tool_server.requests_to("/refund") == []
    assert list(ReplayStep.objects.filter(replay=replay).values_list("call_id", flat=True)) == [
        f"{RUN_ID}-c1"]


def test_a_replay_matching_the_recording_shows_no_divergence_volatile_fields_ignored(
        acme, alice, recorded):
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.divergent_steps == 0
    assert not ReplayStep.objects.filter(replay=replay, flagged=True).exists()


def test_a_changed_output_is_a_flagged_divergence(acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-v2", same_as_recorded("c2", amount_cents=50, state="pending"))})
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.divergent_steps == 1
    step = ReplayStep.objects.get(replay=replay, flagged=True)
    assert step.call_id == f"{RUN_ID}-c2"
    assert step.divergence == [
        {"path": "$.amount_cents", "change": "changed", "recorded": 500, "replayed": 50},
        {"path": "$.state", "change": "changed", "recorded": "refunded",
         "replayed": "pending"}]


def test_a_live_replay_waits_for_approval_then_reuses_the_original_idempotency_keys(
        acme, alice, recorded, tool_server):
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    assert replay.status == "waiting_approval"
    assert replay.approval.kind == Kind.LIVE_REPLAY
    assert walk(replay).status == "waiting_approval"
    assert tool_server.seen == []  # nothing is sent before a person approves
    approve(replay.approval)
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    [refund] = tool_server.requests_to("/refund")
    assert refund.header("Idempotency-Key") == f"idem-{RUN_ID}-c2"
    assert "dry_run" not in refund.body
    assert tool_server.requests_to("/lookup")[0].header("X-Dry-Run") is None
    assert len(tool_server.requests_to("/email")) == 1
    assert set(ReplayStep.objects.filter(replay=replay).values_list("mode_used", flat=True)) \
        == {"live"}


def test_nobody_approves_their_own_live_replay(acme, alice, recorded):
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    with pytest.raises(PermissionDenied):
        decide_approval(replay.approval, by=alice, approve=True, justification="mine")


def test_a_rejected_live_replay_stops_without_calling_anything(acme, alice, recorded,
                                                              tool_server):
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    decide_approval(replay.approval, by=approver(acme), approve=False, justification="not now")
    replay = walk(replay)
    assert replay.status == "rejected"
    assert "rejected" in replay.failure_reason
    assert tool_server.seen == []


def test_a_live_call_that_policy_denies_is_not_sent(acme, alice, recorded, tool_server):
    from policies.services import freeze_tool

    allow_everything(acme)
    freeze_tool(acme, "refund_payment", by=alice)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    replay = walk(replay)
    step = ReplayStep.objects.get(replay=replay, call_id=f"{RUN_ID}-c2")
    assert (step.status, step.mode_used, step.flagged) == ("denied", "not_called", True)
    assert tool_server.requests_to("/refund") == []


def test_a_live_replay_pauses_at_a_hitl_checkpoint_and_resumes_on_approval(
        acme, alice, recorded, tool_server):
    # no policy published: reads are allowed, writes need a person
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    dana = approver(acme)
    approve(replay.approval)
    replay = walk(replay)
    assert replay.status == "waiting_approval"
    assert replay.approval.kind == Kind.TOOL_CALL
    assert replay.approval.call_id == f"{RUN_ID}-c2"
    assert tool_server.requests_to("/refund") == []
    decide_approval(replay.approval, by=dana, approve=True, justification="refund ok")
    replay = walk(replay)
    assert replay.status == "waiting_approval"  # and the exfil call needs its own
    assert len(tool_server.requests_to("/refund")) == 1
    checkpoint = replay.approval
    second = approver(acme, "erin")
    decide_approval(checkpoint, by=dana, approve=True, justification="email ok")
    decide_approval(checkpoint, by=second, approve=True, justification="email ok too")
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    assert len(tool_server.requests_to("/refund")) == 1  # step 2 was not sent twice


def test_outage_mode_refuses_a_live_replay_with_a_clear_message(acme, alice, recorded,
                                                                tool_server):
    acme.outage_mode = True
    acme.save()
    with pytest.raises(ReplayRefused, match="outage mode: replays run in sandbox only") as why:
        start_replay(stored_run(acme), by=alice, mode="live")
    pending = ApprovalRequest.objects.get(tenant=acme, kind=Kind.LEAVE_SANDBOX)
    assert f"request {pending.pk}" in str(why.value)
    assert not Replay.objects.exists()
    sandbox = walk(start_replay(stored_run(acme), by=alice))
    assert sandbox.status == "succeeded"
    assert all(s.header("X-Dry-Run") == "true" or s.body.get("dry_run")
               for s in tool_server.seen)


def test_an_approved_request_to_leave_sandbox_lets_a_live_replay_run_in_outage(
        acme, alice, recorded, tool_server):
    allow_everything(acme)
    acme.outage_mode = True
    acme.save()
    leave = request_approval(acme, tool="replay", action_class="write", kind=Kind.LEAVE_SANDBOX,
                             arguments={"run_id": RUN_ID}, run_id=RUN_ID, requester=alice)
    approve(leave)
    replay = walk(start_replay(stored_run(acme), by=alice, mode="live"))
    assert replay.status == "succeeded", replay.failure_reason
    assert tool_server.requests_to("/refund")[0].header("Idempotency-Key") == \
        f"idem-{RUN_ID}-c2"


def test_outage_mode_forces_a_running_live_replay_into_sandbox(acme, alice, recorded,
                                                               tool_server):
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    acme.outage_mode = True
    acme.save()
    replay = walk(replay)
    assert set(ReplayStep.objects.filter(replay=replay).values_list("mode_used", flat=True)) \
        == {"dry_run", "stub"}
    assert tool_server.requests_to("/email") == []


def test_a_call_interrupted_in_flight_is_resent_with_the_same_key(acme, alice, recorded,
                                                                  tool_server):
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    # what a worker killed mid-call leaves behind: step 1 done, step 2 sent, no answer
    ReplayStep.objects.create(tenant=acme, replay=replay, seq=1, call_id=f"{RUN_ID}-c1",
                              tool=recorded["lookup_customer"], mode_used="live",
                              status="succeeded", output={})
    ReplayStep.objects.create(tenant=acme, replay=replay, seq=2, call_id=f"{RUN_ID}-c2",
                              tool=recorded["refund_payment"], mode_used="live",
                              status="attempting", idempotency_key=f"idem-{RUN_ID}-c2",
                              attempts=1)
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    assert tool_server.requests_to("/lookup") == []  # done steps are skipped
    [refund] = tool_server.requests_to("/refund")
    assert refund.header("Idempotency-Key") == f"idem-{RUN_ID}-c2"
    assert ReplayStep.objects.get(replay=replay, seq=2).attempts == 2


def test_an_interrupted_call_to_a_tool_without_idempotency_is_not_resent(
        acme, alice, recorded, tool_server):
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    for seq, (call, tool) in enumerate((("c1", "lookup_customer"), ("c2", "refund_payment")),
                                       start=1):
        ReplayStep.objects.create(tenant=acme, replay=replay, seq=seq,
                                  call_id=f"{RUN_ID}-{call}", tool=recorded[tool],
                                  mode_used="live", status="succeeded", output={})
    ReplayStep.objects.create(tenant=acme, replay=replay, seq=3, call_id=f"{RUN_ID}-c3",
                              tool=recorded["send_email"], mode_used="live",
                              status="attempting", idempotency_key="replay-x", attempts=1)
    replay = walk(replay)
    assert replay.status == "failed"
    assert "does not honour idempotency keys" in replay.failure_reason
    assert tool_server.seen == []


def test_a_replay_running_past_its_deadline_is_failed_with_the_reason(acme, alice, recorded):
    from datetime import timedelta

    from django.utils import timezone

    replay = start_replay(stored_run(acme), by=alice)
    Replay.objects.filter(pk=replay.pk).update(
        status="running", started_at=timezone.now() - timedelta(hours=3),
        deadline_at=timezone.now() - timedelta(hours=1))
    assert fail_overdue_replays() == 1
    replay.refresh_from_db()
    assert replay.status == "failed"
    assert "past its deadline" in replay.failure_reason
    assert walk(replay).status == "failed"  # a late message finds nothing to do


def test_a_stale_message_does_nothing(acme, alice, recorded, tool_server):
    from operations.replay import execute_replay

    replay = start_replay(stored_run(acme), by=alice)
    assert execute_replay(replay.pk, "not-its-message") is None
    replay.refresh_from_db()
    assert replay.status == "queued"
    assert tool_server.seen == []


def test_a_replay_is_annotated_on_the_run_when_requested_and_when_it_ends(acme, alice,
                                                                         recorded):
    replay = walk(start_replay(stored_run(acme), by=alice))
    notes = list(Annotation.objects.filter(run__run_id=RUN_ID, annotation_kind="replay")
                 .order_by("seq"))
    assert [n.data["event"] for n in notes] == ["requested", "finished"]
    assert all(n.data["replay"] == replay.pk for n in notes)
    assert notes[1].data["status"] == "succeeded"


def test_replaying_needs_the_operate_role(acme, bob, recorded):
    with pytest.raises(PermissionDenied):
        start_replay(stored_run(acme), by=bob)



@pytest.mark.django_db(transaction=True)
def test_a_live_replay_that_waited_long_for_approval_gets_a_fresh_deadline(
        acme, alice, record, tool_server, settings):
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    settings.LEDGER_REPLAY_TIME_LIMIT = 60
    record(acme, recorded_run())
    overdue: list[int] = []

    def lookup_while_the_watchdog_runs(seen: Any) -> tuple[int, Any]:
        overdue.append(fail_overdue_replays())  # the beat task, from another thread
        connection.close()
        return same_as_recorded("c1")(seen)

    wire_tools(acme, tool_server, lookup_customer={"endpoint": tool_server.route(
        "/lookup-watched", lookup_while_the_watchdog_runs)})
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    assert walk(replay).status == "waiting_approval"
    # the approver took three hours: the first claim's deadline is long past
    Replay.objects.filter(pk=replay.pk).update(
        started_at=timezone.now() - timedelta(hours=3),
        deadline_at=timezone.now() - timedelta(hours=2))
    approve(replay.approval)

    replay = walk(replay)

    assert overdue == [0]
    assert replay.status == "succeeded", replay.failure_reason
    assert replay.deadline_at > timezone.now()
    assert len(tool_server.requests_to("/email")) == 1


@pytest.mark.django_db(transaction=True)
def test_a_live_replay_failed_by_the_watchdog_mid_walk_sends_nothing_more(
        acme, alice, record, tool_server):
    from django.db import connection

    record(acme, recorded_run())

    def lookup_then_the_replay_is_failed(seen: Any) -> tuple[int, Any]:
        Replay.objects.filter(status="running").update(
            status="failed", failure_reason="still running past its deadline")
        connection.close()
        return same_as_recorded("c1")(seen)

    wire_tools(acme, tool_server, lookup_customer={"endpoint": tool_server.route(
        "/lookup-then-fail", lookup_then_the_replay_is_failed)})
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)

    replay = walk(replay)

    assert replay.status == "failed"
    assert "past its deadline" in replay.failure_reason  # the watchdog's reason stands
    assert tool_server.requests_to("/refund") == []
    assert tool_server.requests_to("/email") == []


@pytest.mark.django_db(transaction=True)
def test_a_sandbox_replay_failed_by_the_watchdog_stores_no_later_steps(
        acme, alice, record, tool_server):
    from django.db import connection

    record(acme, recorded_run())

    def lookup_then_the_replay_is_failed(seen: Any) -> tuple[int, Any]:
        Replay.objects.filter(status="running").update(
            status="failed", failure_reason="still running past its deadline")
        connection.close()
        return same_as_recorded("c1")(seen)

    wire_tools(acme, tool_server, lookup_customer={"endpoint": tool_server.route(
        "/lookup-then-fail", lookup_then_the_replay_is_failed)})

    replay = walk(start_replay(stored_run(acme), by=alice))

    assert (replay.status, replay.failure_reason) == ("failed",
                                                      "still running past its deadline")
    assert not ReplayStep.objects.filter(replay=replay).exists()
    assert replay.steps_done == 0


def test_the_original_trail_is_untouched_by_a_replay(acme, alice, recorded, user_client):
    version = allow_everything(acme)
    replay = walk(start_replay(stored_run(acme), by=alice, policy_version=version))
    api = user_client(alice)
    trail = api.get("/api/v1/policy-trail/", {"run_id": RUN_ID}).json()["results"]
    assert trail == []  # nothing was decided when the recorded run ran
    replayed = api.get("/api/v1/policy-trail/", {"replay": replay.pk}).json()["results"]
    assert len(replayed) == 3
    assert {d["replay"] for d in replayed} == {replay.pk}
    call = api.get(f"/api/v1/tool-calls/{RUN_ID}-c1/").json()
    assert call["decisions"] == []


def test_another_tenants_replay_filters_the_trail_as_one_that_does_not_exist(
        acme, alice, charlie, recorded, user_client):
    version = allow_everything(acme)
    replay = walk(start_replay(stored_run(acme), by=alice, policy_version=version))
    api = user_client(charlie)  # of globex
    theirs = api.get("/api/v1/policy-trail/", {"replay": replay.pk})
    missing = api.get("/api/v1/policy-trail/", {"replay": replay.pk + 1000})
    assert (theirs.status_code, theirs.json()["results"]) == (200, [])
    assert (missing.status_code, missing.json()["results"]) == (200, [])
