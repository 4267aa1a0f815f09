"""A sandbox replay stores its steps in groups: their decisions, rows and the progress in one
transaction per group. A worker dying mid-group leaves nothing of that group behind (its
dry-runs are done again, never its decisions twice); a failure keeps the steps done before
it; a policy published while it runs decides from the next group on."""

from __future__ import annotations

from typing import Any

import pytest

from operations import replay as replay_module
from operations.models import ReplayStep
from operations.replay import start_replay
from policies.models import Decision

from .scenario import RUN_ID, allow_everything, recorded_run, stored_run, walk, wire_tools

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(acme, record, tool_server):
    record(acme, recorded_run())
    return wire_tools(acme, tool_server)


class WorkerDied(BaseException):
    """What a killed worker looks like from inside the walk: nothing after it runs."""


def test_progress_moves_with_every_group_and_the_rows_arrive_with_it(acme, alice, recorded,
                                                                    monkeypatch):
    monkeypatch.setattr(replay_module, "SANDBOX_GROUP_STEPS", 2)
    seen: list[tuple[int, int, int]] = []
    progress = replay_module._progress

    def watch(replay: Any, seq: int, flagged: int) -> None:
        progress(replay, seq, flagged)
        seen.append((seq, ReplayStep.objects.filter(replay=replay).count(),
                     Decision.objects.filter(run_id=RUN_ID).count()))

    monkeypatch.setattr(replay_module, "_progress", watch)
    allow_everything(acme)
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    assert seen == [(2, 2, 2), (3, 3, 3)]  # steps 1-2 together, then step 3
    steps = list(ReplayStep.objects.filter(replay=replay).order_by("seq"))
    assert [getattr(s.decision, "call_id", None) for s in steps] == [
        f"{RUN_ID}-c{i}" for i in (1, 2, 3)]


def test_a_group_is_stored_once_its_time_is_up(acme, alice, recorded, monkeypatch):
    monkeypatch.setattr(replay_module, "SANDBOX_GROUP_SECONDS", 0.0)
    stored: list[int] = []
    progress = replay_module._progress

    def watch(replay: Any, seq: int, flagged: int) -> None:
        stored.append(seq)
        progress(replay, seq, flagged)

    monkeypatch.setattr(replay_module, "_progress", watch)
    assert walk(start_replay(stored_run(acme), by=alice)).status == "succeeded"
    assert stored == [1, 2, 3]


def test_a_worker_dying_mid_group_leaves_nothing_and_the_redelivery_does_it_once(
        acme, alice, recorded, tool_server, monkeypatch):
    allow_everything(acme)
    replay = start_replay(stored_run(acme), by=alice)
    result = replay_module._sandbox_result

    def dies_at_the_third(call: dict[str, Any], tool: Any) -> Any:
        if call["call_id"].endswith("c3"):
            raise WorkerDied
        return result(call, tool)

    monkeypatch.setattr(replay_module, "_sandbox_result", dies_at_the_third)
    with pytest.raises(WorkerDied):
        walk(replay)
    assert not ReplayStep.objects.filter(replay=replay).exists()
    assert not Decision.objects.filter(run_id=RUN_ID).exists()
    replay.refresh_from_db()
    assert (replay.status, replay.steps_done) == ("running", 0)

    monkeypatch.setattr(replay_module, "_sandbox_result", result)
    replay = walk(replay)  # the same message, delivered again
    assert replay.status == "succeeded", replay.failure_reason
    assert ReplayStep.objects.filter(replay=replay).count() == 3
    assert Decision.objects.filter(run_id=RUN_ID).count() == 3  # none twice
    assert len(tool_server.requests_to("/lookup")) == 2  # the dry-run was simply done again
    assert all(s.header("X-Dry-Run") == "true" for s in tool_server.requests_to("/lookup"))


def test_a_failure_mid_group_keeps_the_steps_done_before_it(acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server, refund_payment={"endpoint": ""})  # dry-run, no connector
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.status == "failed"
    assert "no connector" in replay.failure_reason
    assert replay.steps_done == 1
    assert list(ReplayStep.objects.filter(replay=replay).values_list("seq", flat=True)) == [1]
    assert Decision.objects.filter(run_id=RUN_ID).count() == 1


def test_steps_already_done_are_skipped_in_sandbox(acme, alice, recorded, tool_server):
    replay = start_replay(stored_run(acme), by=alice)
    ReplayStep.objects.create(tenant=acme, replay=replay, seq=1, call_id=f"{RUN_ID}-c1",
                              tool=recorded["lookup_customer"], mode_used="dry_run",
                              status="succeeded", output={})
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    assert (replay.steps_done, replay.steps_total) == (3, 3)
    assert tool_server.requests_to("/lookup") == []
    assert ReplayStep.objects.filter(replay=replay).count() == 3


@pytest.mark.parametrize(("group", "refund"), [(1, "denied"), (50, "succeeded")])
def test_a_policy_published_mid_replay_decides_from_the_next_group(
        acme, alice, recorded, monkeypatch, group, refund):
    from policies.services import freeze_tool

    monkeypatch.setattr(replay_module, "SANDBOX_GROUP_STEPS", group)
    allow_everything(acme)
    result = replay_module._sandbox_result

    def freeze_after_the_first(call: dict[str, Any], tool: Any) -> Any:
        answer = result(call, tool)
        if call["call_id"].endswith("c1"):
            freeze_tool(acme, "refund_payment", by=alice)
        return answer

    monkeypatch.setattr(replay_module, "_sandbox_result", freeze_after_the_first)
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    assert ReplayStep.objects.get(replay=replay, seq=2).status == refund


def test_an_unfinished_row_in_a_sandbox_replay_is_finished_step_at_a_time(acme, alice,
                                                                          recorded,
                                                                          tool_server):
    replay = start_replay(stored_run(acme), by=alice)
    ReplayStep.objects.create(tenant=acme, replay=replay, seq=2, call_id=f"{RUN_ID}-c2",
                              tool=recorded["refund_payment"], mode_used="dry_run",
                              status="attempting")
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    assert (replay.steps_done, replay.steps_total) == (3, 3)
    steps = list(ReplayStep.objects.filter(replay=replay).order_by("seq"))
    assert [(s.seq, s.status, s.mode_used) for s in steps] == [
        (1, "succeeded", "dry_run"), (2, "succeeded", "dry_run"), (3, "succeeded", "stub")]
    assert tool_server.requests_to("/refund")[0].body["dry_run"] is True
