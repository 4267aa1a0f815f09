"""A run's status and end time mean something (a failed run is investigated, a succeeded one is
not): they are chained as the run's closing record, and `ledger verify` names any change to
them made below the application, even by a role the append-only triggers let move the tip."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.db import connection

from runs.integrity import verify_tenant
from runs.models import Run


@pytest.fixture
def closed(acme, record, make_run) -> Run:
    runs = [make_run() for _ in range(2)]
    for run in runs:
        started = datetime.fromisoformat(run["started_at"])
        run["status"], run["ended_at"] = "failed", (started + timedelta(minutes=5)).isoformat()
    record(acme, *runs)
    return Run.objects.get(run_id=runs[0]["run_id"])


@pytest.fixture
def running(acme, record, make_run) -> Run:
    run = make_run()
    run["status"], run["ended_at"] = "running", None
    record(acme, run)
    return Run.objects.get(run_id=run["run_id"])


def tip(run: Run, **values: Any) -> None:
    """What the app's own role may do on PostgreSQL: the trigger lets a run's tip move."""
    sets = ", ".join(f"{name} = %s" for name in values)
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE runs_run SET {sets} WHERE id = %s",
                       [*values.values(), run.pk])


def the_break(acme: Any) -> Any:
    report = verify_tenant(acme)
    assert len(report.breaks) == 1, [str(b) for b in report.breaks]
    return report.breaks[0]


def test_an_untouched_closed_run_verifies(acme, closed, running):
    assert verify_tenant(acme).intact


def test_a_failed_run_turned_succeeded_is_named(acme, closed):
    tip(closed, status="succeeded")
    problem = the_break(acme)
    assert (problem.run_id, problem.problem) == (closed.run_id, "modified")
    assert "status succeeded" in problem.detail
    assert "failed" in problem.detail


def test_a_moved_end_time_is_named(acme, closed):
    tip(closed, ended_at=closed.ended_at + timedelta(hours=3))
    problem = the_break(acme)
    assert (problem.run_id, problem.problem) == (closed.run_id, "modified")
    assert "ended" in problem.detail


def test_a_closed_run_reopened_is_named(acme, closed):
    tip(closed, status="running", ended_at=None)
    problem = the_break(acme)
    assert (problem.run_id, problem.problem) == (closed.run_id, "modified")


def test_a_running_run_marked_ended_without_its_closing_record_is_named(acme, running):
    tip(running, status="succeeded", ended_at=running.started_at + timedelta(minutes=1))
    problem = the_break(acme)
    assert (problem.run_id, problem.problem) == (running.run_id, "modified")
    assert "no closing record" in problem.detail
