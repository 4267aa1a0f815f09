"""Two batches racing with one call id (an agent that retried a timed-out batch under a new
run, or two agents that reuse ids): the first to commit lands it, the other is told which record
conflicts (409), never an error page, whatever the storage does underneath (a unique index, or
the side table of keys of a partitioned table)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection, connections, transaction

from runs.ingest import BatchConflict, ingest_batch
from runs.ingest_schema import parse_batch
from runs.models import ToolCall

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _run_with_call(make_run: Any, call_id: str) -> dict[str, Any]:
    run = make_run()
    run["tool_calls"] = run["tool_calls"][:1]
    run["tool_calls"][0]["call_id"] = call_id
    for record in run.get("model_calls", []) + run.get("annotations", []):
        record.pop("target_call_id", None)
    return run


def _someone_waits_on_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND wait_event_type = 'Lock'")
        return bool(cursor.fetchone()[0])


def test_the_second_of_two_racing_batches_with_one_call_id_is_a_conflict(acme, make_run):
    first_run = _run_with_call(make_run, "shared-call")
    second_run = _run_with_call(make_run, "shared-call")
    assert first_run["run_id"] != second_run["run_id"]
    stored, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def first() -> None:
        try:
            with transaction.atomic():  # stored, not committed until released
                ingest_batch(acme, parse_batch({"runs": [first_run]}), recorded_by="test")
                stored.set()
                release.wait(10)
        finally:
            connections.close_all()

    def second() -> None:
        try:
            ingest_batch(acme, parse_batch({"runs": [second_run]}), recorded_by="test")
            outcome["second"] = "landed"
        except Exception as exc:  # what it raised is the assertion
            outcome["second"] = exc
        finally:
            connections.close_all()

    one = threading.Thread(target=first)
    one.start()
    assert stored.wait(10)
    two = threading.Thread(target=second)
    two.start()
    for _ in range(100):  # the second batch waits on the first's call id
        if _someone_waits_on_a_lock():
            break
        time.sleep(0.05)
    else:
        pytest.fail("the second batch never waited on the first")
    release.set()
    one.join(10)
    two.join(10)
    assert isinstance(outcome["second"], BatchConflict), outcome["second"]
    assert "shared-call" in str(outcome["second"])
    assert ToolCall.objects.filter(call_id="shared-call").count() == 1
