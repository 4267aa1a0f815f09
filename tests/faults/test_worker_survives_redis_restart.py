"""Redis restarted under a worker: the worker that held a live replay's message (waiting for its
approval) stays up, reconnects, and the replay finishes once approved, its side effect sent
once. celery/kombu/redis-py versions that crashed here (``Unrecoverable error: AttributeError
... 'hostname'``) are kept out by pyproject's pins."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from operations.models import Replay
from operations.replay import start_replay
from tests.replay.scenario import (
    RUN_ID,
    allow_everything,
    approve,
    recorded_run,
    stored_run,
    wire_tools,
)

from .conftest import Worker, broker_at, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(persistent_redis: Any, tmp_path: Path) -> Iterator[Worker]:
    # The waiting replay looks again every 30 s: the worker holds that message (reserved,
    # unacknowledged) across the whole outage below. Its beat runs the watchdogs every 2 s.
    with broker_at(persistent_redis.url):
        worker = Worker(persistent_redis.url, tmp_path / "worker.log", "--beat",
                        "--schedule", str(tmp_path / "beat-schedule"),
                        LEDGER_REPLAY_APPROVAL_POLL="30", LEDGER_WATCHDOG_INTERVAL="2").start()
        try:
            yield worker
        finally:
            worker.stop()


def test_a_worker_holding_a_waiting_replay_survives_a_redis_restart(
        worker, persistent_redis, acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    allow_everything(acme)
    replay = start_replay(stored_run(acme), by=alice, mode="live")
    wait_for("the worker setting the replay down to wait", lambda: Replay.objects.filter(
        pk=replay.pk, worker__gt="", status="waiting_approval").exists(), worker=worker)
    time.sleep(1)  # the look-again message is now the worker's, unacknowledged

    persistent_redis.stop()
    time.sleep(3)  # the worker notices and keeps trying to reconnect
    assert worker.alive(), worker.output()
    persistent_redis.start()
    approve(replay.approval)

    done = wait_for("the replay finishing after the restart", lambda: Replay.objects.filter(
        pk=replay.pk, status__in=["succeeded", "failed"]).first(), seconds=90, worker=worker)
    assert done.status == "succeeded", (done.failure_reason, worker.output())
    assert worker.alive(), worker.output()
    assert "Unrecoverable error" not in worker.output()
    assert [s.header("Idempotency-Key") for s in tool_server.requests_to("/refund")] == [
        f"idem-{RUN_ID}-c2"]
