"""Every long job kind is watched: a job no worker has shown moving for the stall time is
queued again where that is safe (exports, replays; their progress kept) or failed with its
reason (back-tests), and one that keeps stalling fails. Every task kind has a deliberate time
limit, and the broker's visibility timeout outlasts them all."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from core.models import OutboxMessage
from core.watchdog import watch_jobs
from exports.models import AuditExport, ExportPart
from exports.services import plan, produce_part, request_export
from exports.watchdog import requeue_stalled_exports
from ledger_portal import celery_app
from operations.models import Replay, ReplayStep
from operations.replay import execute_replay, requeue_stalled_replays, start_replay
from policies.backtest import fail_stalled_backtests, start_backtest
from policies.models import BackTest, Policy
from policies.services import create_draft
from tests.celery_conf import celery_conf
from tests.exports.conftest import WINDOW
from tests.replay.scenario import recorded_run, stored_run, wire_tools

LONG_AGO = timedelta(hours=1)


@pytest.fixture
def eager() -> Iterator[None]:
    with celery_conf(task_always_eager=True):
        yield


def quiet_since(model: Any, pk: int, ago: timedelta = LONG_AGO) -> None:
    model.objects.filter(pk=pk).update(heartbeat_at=timezone.now() - ago)


# -- every kind -------------------------------------------------------------------------------

def job_models() -> set[str]:
    """Models whose rows are jobs a worker runs: a status with a "running" choice."""
    found = set()
    for model in apps.get_models():
        field = next((f for f in model._meta.fields if f.name == "status"), None)
        if field is not None and "running" in dict(field.choices or ()):
            found.add(model._meta.label)
    return found


def test_every_long_job_kind_has_a_heartbeat_and_a_watchdog():
    watched_elsewhere = {
        "runs.Run": "an agent's run, not a worker's job: the agent reports its end",
        "exports.ExportPart": "watched through its export (requeue_stalled_exports)",
        "operations.Rollback": "fail_stuck_rollbacks, LEDGER_ROLLBACK_TIME_LIMIT",
    }
    watched = {"exports.AuditExport": "exports.watchdog.requeue_stalled_exports",
               "operations.Replay": "operations.replay.requeue_stalled_replays",
               "policies.BackTest": "policies.backtest.fail_stalled_backtests"}
    assert job_models() == set(watched) | set(watched_elsewhere)
    assert sorted(settings.LEDGER_JOB_WATCHDOGS) == sorted(watched.values())
    for label in watched:
        names = {f.name for f in apps.get_model(label)._meta.fields}
        assert {"heartbeat_at", "stalls"} <= names, label


def test_every_task_kind_has_a_time_limit_and_the_visibility_timeout_outlasts_them():
    celery_app.loader.import_default_modules()  # every app's tasks, as a worker loads them
    ours = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert ours == set(settings.LEDGER_TASK_TIME_LIMITS)
    for name in ours:
        task = celery_app.tasks[name]
        assert task.soft_time_limit == settings.LEDGER_TASK_TIME_LIMITS[name], name
        assert task.time_limit == task.soft_time_limit + settings.TASK_KILL_GRACE, name
    longest = max(celery_app.tasks[n].time_limit for n in ours)
    assert (
        longest + settings.LEDGER_REPLAY_APPROVAL_POLL + settings.LEDGER_ROLLBACK_BACKOFF_MAX_MS
        / 1000) < settings.CELERY_BROKER_VISIBILITY_TIMEOUT


# -- exports ----------------------------------------------------------------------------------

def an_export_killed_mid_part(acme: Any, alice: Any, settings: Any) -> tuple[AuditExport, int]:
    """An export whose worker died writing its first part, as a SIGKILL leaves it."""
    settings.LEDGER_EXPORT_PART_ROWS = 10
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    first, *rest = plan(export.pk)
    for part_id in rest[:2]:
        produce_part(part_id)
    ExportPart.objects.filter(pk=first).update(status="running", attempts=1, rows_done=7,
                                               claimed_by="gone:1")
    AuditExport.objects.filter(pk=export.pk).update(rows_done=F("rows_done") + 7)
    quiet_since(AuditExport, export.pk)
    export.refresh_from_db()
    return export, first


def test_a_stalled_export_is_requeued_and_completes_without_losing_progress(
        eager, acme, alice, record, make_run, export_dirs, settings,
        django_capture_on_commit_callbacks):
    record(acme, *[make_run() for _ in range(3)])
    export, killed_part = an_export_killed_mid_part(acme, alice, settings)
    progress_before = export.rows_done

    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stalled_exports() == {"requeued": 1, "failed": 0}

    export.refresh_from_db()
    assert export.status == "done", export.error
    assert export.stalls == 1
    assert export.rows_done >= progress_before
    assert ExportPart.objects.get(pk=killed_part).attempts == 2


def test_an_export_that_keeps_stalling_fails_with_the_reason(
        acme, alice, record, make_run, export_dirs, settings):
    record(acme, make_run())
    export, _ = an_export_killed_mid_part(acme, alice, settings)
    AuditExport.objects.filter(pk=export.pk).update(stalls=settings.LEDGER_JOB_MAX_STALLS)

    assert requeue_stalled_exports() == {"requeued": 0, "failed": 1}

    export.refresh_from_db()
    assert export.status == "failed"
    assert "no worker showed it moving for 300 s" in export.error
    assert f"{settings.LEDGER_JOB_MAX_STALLS + 1} times" in export.error
    assert export.error.startswith(f"export {export.pk} stopped at ")


def test_a_job_that_moved_recently_is_left_alone(acme, alice, record, make_run, export_dirs,
                                                 settings):
    record(acme, make_run())
    export, _ = an_export_killed_mid_part(acme, alice, settings)
    quiet_since(AuditExport, export.pk, timedelta(seconds=10))
    assert requeue_stalled_exports() == {"requeued": 0, "failed": 0}
    assert AuditExport.objects.get(pk=export.pk).stalls == 0


def test_an_export_waiting_in_the_outbox_is_neither_sent_twice_nor_failed(
        acme, alice, export_dirs, settings, django_capture_on_commit_callbacks):
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    AuditExport.objects.filter(pk=export.pk).update(created_at=timezone.now() - LONG_AGO)
    OutboxMessage.objects.create(task="exports.plan_export", args=[export.pk])
    for _ in range(settings.LEDGER_JOB_MAX_STALLS + 3):  # a long broker outage
        with django_capture_on_commit_callbacks(execute=False) as sent:
            assert requeue_stalled_exports() == {"requeued": 0, "failed": 0}
        assert sent == []  # its message waits for the broker: nothing more to send
    export.refresh_from_db()
    assert (export.status, export.stalls) == ("queued", 0)


def test_a_queued_job_waiting_behind_others_is_sent_again_but_never_failed(
        acme, alice, record, tool_server, settings, django_capture_on_commit_callbacks):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    with django_capture_on_commit_callbacks(execute=False):
        replay = start_replay(stored_run(acme), by=alice)
    for _ in range(settings.LEDGER_JOB_MAX_STALLS + 3):
        quiet_since(Replay, replay.pk)
        with django_capture_on_commit_callbacks(execute=False) as sent:
            assert requeue_stalled_replays() == {"requeued": 1, "failed": 0}
        assert len(sent) == 1
    replay.refresh_from_db()
    assert (replay.status, replay.stalls) == ("queued", 0)


# -- back-tests -------------------------------------------------------------------------------

def a_backtest(acme: Any, alice: Any) -> BackTest:
    draft = create_draft(Policy.objects.create(tenant=acme, name="tools"), by=alice,
                         change_note="try")
    return start_backtest(draft, *WINDOW, by=alice)


def test_a_running_backtest_whose_worker_stopped_fails_with_the_reason(acme, alice):
    test = a_backtest(acme, alice)
    BackTest.objects.filter(pk=test.pk).update(status="running", total=10_000, processed=4_000)
    quiet_since(BackTest, test.pk)

    assert fail_stalled_backtests() == {"requeued": 0, "failed": 1}

    test.refresh_from_db()
    assert test.status == "failed"
    assert test.error.startswith("stopped after 4000 of 10000 calls: no worker showed it moving")
    assert test.finished_at is not None


def test_a_queued_backtest_whose_message_was_lost_runs(
        eager, acme, alice, record, make_run, django_capture_on_commit_callbacks):
    record(acme, make_run())
    test = a_backtest(acme, alice)
    BackTest.objects.filter(pk=test.pk).update(created_at=timezone.now() - LONG_AGO)

    with django_capture_on_commit_callbacks(execute=True):
        assert watch_jobs()["fail_stalled_backtests"] == {"requeued": 1, "failed": 0}

    test.refresh_from_db()
    assert test.status == "done"
    assert test.processed == test.total > 0


# -- replays ----------------------------------------------------------------------------------

def test_a_replay_whose_worker_died_mid_walk_is_handed_on_and_resumes(
        eager, acme, alice, record, tool_server, django_capture_on_commit_callbacks):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    with django_capture_on_commit_callbacks(execute=False):
        replay = start_replay(stored_run(acme), by=alice, until_step=1)  # sandbox, one step
    execute_replay(replay.pk, replay.task_id)
    assert Replay.objects.get(pk=replay.pk).status == "succeeded"
    # Rewind it to "running, step 1 done, worker gone": the state a killed worker leaves.
    with django_capture_on_commit_callbacks(execute=False):
        replay = start_replay(stored_run(acme), by=alice)
    Replay.objects.filter(pk=replay.pk).update(status="running", worker="gone:1")
    quiet_since(Replay, replay.pk)
    old_task = replay.task_id

    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stalled_replays() == {"requeued": 1, "failed": 0}

    replay.refresh_from_db()
    assert replay.status == "succeeded", replay.failure_reason
    assert replay.task_id != old_task  # the lost message, if it comes back, does nothing
    assert execute_replay(replay.pk, old_task) is None
    assert ReplayStep.objects.filter(replay=replay).count() == 3


def test_a_waiting_replay_is_not_stalled(acme, alice, record, tool_server):
    record(acme, recorded_run())
    wire_tools(acme, tool_server)
    replay = start_replay(stored_run(acme), by=alice)
    Replay.objects.filter(pk=replay.pk).update(status="waiting_approval")
    quiet_since(Replay, replay.pk)
    assert requeue_stalled_replays() == {"requeued": 0, "failed": 0}
