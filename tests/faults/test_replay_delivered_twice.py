"""One replay message delivered to two workers at once (a broker handing it out again while
the first still walks it): the second stands down, nothing raises, every call goes out once.
The walk holds a PostgreSQL advisory lock, released with the connection if its worker dies."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from django.db import connection

from operations.models import Replay, ReplayStep
from operations.replay import execute_replay, start_replay
from tests.replay.scenario import (
    RECORDED,
    RUN_ID,
    allow_everything,
    approve,
    recorded_run,
    stored_run,
    wire_tools,
)
from tests.replay.toolservers import Seen

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def in_a_thread(target: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``target`` on its own database connection, as another worker would."""
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            outcome["value"] = target(*args)
        except BaseException as exc:  # the assertion below names it
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=body)
    thread.start()
    return thread, outcome


def test_the_second_worker_given_a_replay_being_walked_stands_down(
        acme, alice, record, tool_server):
    record(acme, recorded_run())
    in_call, release = threading.Event(), threading.Event()

    def slow_refund(seen: Seen) -> tuple[int, Any]:
        in_call.set()
        release.wait(30)
        return 200, RECORDED["c2"]

    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-slow", slow_refund), "supports_idempotency": True})
    allow_everything(acme)
    replay = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    replay.refresh_from_db()

    first, first_outcome = in_a_thread(execute_replay, replay.pk, replay.task_id)
    assert in_call.wait(30), "the first worker never reached the refund"
    second, second_outcome = in_a_thread(execute_replay, replay.pk, replay.task_id)
    second.join(30)
    assert "error" not in second_outcome, second_outcome.get("error")
    assert second_outcome["value"] is None  # stood down: another worker has it
    release.set()
    first.join(30)
    assert "error" not in first_outcome, first_outcome.get("error")

    done = Replay.objects.get(pk=replay.pk)
    assert done.status == "succeeded", done.failure_reason
    assert len(tool_server.requests_to("/refund-slow")) == 1
    assert len(tool_server.requests_to("/lookup")) == 1
    assert len(tool_server.requests_to("/email")) == 1
    assert ReplayStep.objects.filter(replay=replay).count() == 3
    assert done.steps_done == 3
    assert f"idem-{RUN_ID}-c2" in {
        s.idempotency_key for s in ReplayStep.objects.filter(replay=replay)}


def test_a_replay_is_free_again_once_its_walk_ends(acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    replay = start_replay(stored_run(acme), by=alice)  # sandbox
    thread, outcome = in_a_thread(execute_replay, replay.pk, replay.task_id)
    thread.join(30)
    assert outcome["value"].status == "succeeded"
    with connection.cursor() as cursor:  # nothing is left locked
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")
        assert cursor.fetchone()[0] == 0


def test_the_watchdog_leaves_a_replay_a_live_worker_still_walks(acme, alice, record,
                                                                 tool_server):
    from core.locks import held_while_walking
    from operations.replay import requeue_stalled_replays

    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    replay = start_replay(stored_run(acme), by=alice)
    Replay.objects.filter(pk=replay.pk).update(status="running", heartbeat_at=None,
                                               created_at="2000-01-01T00:00:00Z")
    walking, done = threading.Event(), threading.Event()

    def slow_walker() -> None:  # a worker in a long call: quiet, but alive
        with held_while_walking("replay", replay.pk):
            walking.set()
            done.wait(30)

    walker, _ = in_a_thread(slow_walker)
    assert walking.wait(10)
    try:
        assert requeue_stalled_replays() == {"requeued": 0, "failed": 0}
    finally:
        done.set()
        walker.join(10)
    left = Replay.objects.get(pk=replay.pk)
    assert (left.status, left.task_id, left.stalls) == ("running", replay.task_id, 0)
    assert requeue_stalled_replays() == {"requeued": 1, "failed": 0}  # once it is gone
