"""Replays on a real Celery worker (prefork, Redis, PostgreSQL) against tool servers on
loopback: a sandbox replay calls dry-runs only, stops where asked and flags a divergence (and
none when the outputs match); a live replay waits for its approval without holding the worker;
and a worker process killed mid-call never makes a tool see a second idempotency key."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from operations.models import Replay, ReplayStep
from operations.replay import start_replay
from tests.celery_conf import prefork_worker_process, worker_env
from tests.replay.scenario import (
    RECORDED,
    RUN_ID,
    allow_everything,
    approve,
    recorded_run,
    same_as_recorded,
    stored_run,
    wire_tools,
)
from tests.replay.toolservers import Seen, ToolServer, http_tool_server

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with http_tool_server() as server:
        yield server


@pytest.fixture
def prefork_worker(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    env = worker_env(LEDGER_DATA_DIR=str(settings.DATA_DIR),
                     LEDGER_REPLAY_APPROVAL_POLL="1",
                     LEDGER_EGRESS_ALLOW="127.0.0.1,localhost")  # the loopback tool servers
    with prefork_worker_process(env, tmp_path / "worker.log") as process:
        yield process


def wait_for(what: str, check: Any, seconds: float = 60) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


def finished(replay: Replay) -> Replay:
    return wait_for("the replay finishing", lambda: Replay.objects.filter(
        pk=replay.pk, status__in=["succeeded", "failed"]).first())


def test_a_sandbox_replay_on_a_real_worker_calls_dry_runs_only_and_stops_where_asked(
        prefork_worker, acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-v2", same_as_recorded("c2", state="pending"))})

    replay = finished(start_replay(stored_run(acme), by=alice, until_step=2))

    assert replay.status == "succeeded", replay.failure_reason
    assert (replay.steps_done, replay.steps_total) == (2, 2)
    [lookup] = tool_server.requests_to("/lookup")
    assert lookup.header("X-Dry-Run") == "true"
    [refund] = tool_server.requests_to("/refund-v2")
    assert refund.body["dry_run"] is True
    assert tool_server.requests_to("/email") == []  # step 3 is past --until-step
    assert replay.divergent_steps == 1
    flagged = ReplayStep.objects.get(replay=replay, flagged=True)
    assert flagged.call_id == f"{RUN_ID}-c2"
    assert flagged.divergence == [{"path": "$.state", "change": "changed",
                                   "recorded": "refunded", "replayed": "pending"}]


def test_a_sandbox_replay_on_a_real_worker_matching_the_recording_shows_no_divergence(
        prefork_worker, acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)

    replay = finished(start_replay(stored_run(acme), by=alice))

    assert replay.status == "succeeded", replay.failure_reason
    assert (replay.steps_done, replay.divergent_steps) == (3, 0)
    assert not ReplayStep.objects.filter(replay=replay, flagged=True).exists()
    assert all(s.header("X-Dry-Run") == "true" or (s.body or {}).get("dry_run") is True
               for s in tool_server.seen)


def test_a_live_replay_waits_on_a_real_worker_and_resumes_on_approval(
        prefork_worker, acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    allow_everything(acme)
    replay = start_replay(stored_run(acme), by=alice, mode="live")
    # claimed by the worker (its name recorded), then set down to wait for the approval
    wait_for("the worker setting the replay down to wait", lambda: Replay.objects.filter(
        pk=replay.pk, worker__gt="", status="waiting_approval").exists())
    assert tool_server.seen == []
    approve(replay.approval)
    done = wait_for("the replay finishing", lambda: Replay.objects.filter(
        pk=replay.pk, status__in=["succeeded", "failed"]).first())
    assert done.status == "succeeded", done.failure_reason
    assert [s.header("Idempotency-Key") for s in tool_server.requests_to("/refund")] == [
        f"idem-{RUN_ID}-c2"]


def test_a_worker_killed_mid_call_never_sends_a_new_idempotency_key(
        prefork_worker, acme, alice, record, tool_server):
    record(acme, recorded_run())
    first_call_arrived, release = threading.Event(), threading.Event()

    def refund(seen: Seen) -> tuple[int, Any]:
        if not first_call_arrived.is_set():
            first_call_arrived.set()
            release.wait(30)  # the worker dies while this call is in flight
        return 200, RECORDED["c2"]

    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-slow", refund)})
    allow_everything(acme)
    replay = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    assert first_call_arrived.wait(60), "the live refund call never arrived"
    attempting = ReplayStep.objects.get(replay=replay, seq=2)
    assert (attempting.status, attempting.idempotency_key) == ("attempting",
                                                               f"idem-{RUN_ID}-c2")
    pid = int(Replay.objects.get(pk=replay.pk).worker.rpartition(":")[2])
    assert pid != prefork_worker.pid  # the pool process running the task, not the parent
    os.kill(pid, signal.SIGKILL)
    release.set()
    done = wait_for("the replay finishing after the kill", lambda: Replay.objects.filter(
        pk=replay.pk, status__in=["succeeded", "failed"]).first(), seconds=90)
    assert done.status == "succeeded", done.failure_reason
    keys = [s.header("Idempotency-Key") for s in tool_server.requests_to("/refund-slow")]
    assert len(keys) == 2  # the interrupted call was sent again...
    assert set(keys) == {f"idem-{RUN_ID}-c2"}  # ...with the same key, never a new one
    assert len(tool_server.requests_to("/lookup")) == 1  # the step done before was skipped
    assert len(tool_server.requests_to("/email")) == 1
    for path in ("/lookup", "/email"):
        assert all(s.header("Idempotency-Key") for s in tool_server.requests_to(path))
    assert ReplayStep.objects.get(replay=replay, seq=2).attempts == 2
