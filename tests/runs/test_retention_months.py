"""On PostgreSQL a past month whose every run is due for removal goes whole: its record
partitions are dropped instead of its rows deleted, still under signed removal records, and the
ledger still verifies. A month any run keeps is left to the run-by-run removal, which says
why; the SQL function that drops partitions checks every record it is given, whoever calls it.

The records here are stored now; retention is asked about a ``now`` months ahead, so this
month's partitions are the past month weighed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from core.partitions import ensure_partitions
from runs.integrity import seal_tenant_digest, verify_tenant
from runs.models import Annotation, ModelCall, RemovalRecord, Run, Step, ToolCall
from runs.retention import _sign_removal, apply_retention, place_legal_hold, sign_removal_of
from runs.retention_months import remove_due_months
from runs.tasks import apply_retention as hourly_retention
from tests.faults.test_app_role import app_role  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.postgres]
MONTHS_LATER = timedelta(days=100)  # this month ends before a 30 or 60 day period from then
THIS_MONTH = f"{datetime.now(UTC):%Y%m}"
DROPPED_WHOLE = [f"{model._meta.db_table}_p{THIS_MONTH}" for model in (ToolCall, ModelCall,
                                                                       Step)]


def _exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return bool(cursor.fetchone()[0])


def _closed_runs(tenant: Any, record: Any, make_run: Any, count: int = 3) -> list[str]:
    runs = [make_run(tenant.slug) for _ in range(count)]
    for run in runs:
        run["status"], run["ended_at"] = "succeeded", timezone.now().isoformat()
    record(tenant, *runs)
    return [run["run_id"] for run in runs]


@pytest.fixture
def acme_30(acme: Any) -> Any:
    acme.retention_days = 30
    acme.save()
    return acme


def test_a_month_whose_every_run_is_due_loses_its_partitions_under_signed_records(
        acme_30, record, make_run):
    run_ids = _closed_runs(acme_30, record, make_run)
    seal_tenant_digest(acme_30)  # a digest signed these runs before they went
    records = sum(model.objects.filter(run__run_id__in=run_ids).count()
                  for model in (Step, ModelCall, ToolCall, Annotation)) + 3

    report = apply_retention(acme_30, timezone.now() + MONTHS_LATER)

    [month] = report.months
    assert month.kept_because == ""
    assert month.month == date.today().replace(day=1)
    assert sorted(month.dropped) == sorted(DROPPED_WHOLE)
    assert not any(_exists(table) for table in DROPPED_WHOLE)
    # the notes' partition keeps the governance log: its due rows were deleted instead
    assert _exists(f"runs_annotation_p{THIS_MONTH}")
    assert not Annotation.objects.filter(run__run_id__in=run_ids).exists()
    assert not Run.objects.filter(tenant=acme_30, run_id__in=run_ids).exists()
    assert report.removed_runs == month.runs == 3
    assert report.removed_records == month.records == records
    [removal] = RemovalRecord.objects.filter(tenant=acme_30)
    assert sorted(removal.removed_runs) == sorted(run_ids)
    assert removal.records == records
    assert report.removal_records == [removal.number]
    note = Annotation.objects.filter(tenant=acme_30, annotation_kind="retention").last()
    assert note is not None
    assert f"with the month {date.today():%Y-%m}" in note.body
    verified = verify_tenant(acme_30)
    assert verified.intact, [str(b) for b in verified.breaks]
    assert verified.removed_runs == 3
    # the side tables of keys kept nothing of the dropped rows: the same ids go in again
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM runs_toolcall_keys")
        assert cursor.fetchone()[0] == ToolCall.objects.count() == 0
    record(acme_30, *[make_run() for _ in range(2)])  # stored in the default partition now
    assert verify_tenant(acme_30).intact


@pytest.mark.django_db(transaction=True)  # as the worker runs it: no caller's transaction
def test_the_hourly_task_weighs_every_tenant_and_signs_for_each(
        acme_30, globex, record, make_run, caplog):
    globex.retention_days = 60
    globex.save()
    acme_runs = _closed_runs(acme_30, record, make_run, 2)
    globex_runs = _closed_runs(globex, record, make_run, 3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(timezone, "now", lambda: datetime.now(UTC) + MONTHS_LATER)
        with caplog.at_level(logging.INFO, logger="runs.retention_months"):
            removed = hourly_retention()

    assert removed == {"acme": 2, "globex": 3}
    assert f"retention: {date.today():%Y-%m}: removed whole, 5 runs" in caplog.text
    assert not any(_exists(table) for table in DROPPED_WHOLE)
    for tenant, run_ids in ((acme_30, acme_runs), (globex, globex_runs)):
        [removal] = RemovalRecord.objects.filter(tenant=tenant)
        assert sorted(removal.removed_runs) == sorted(run_ids)
        assert verify_tenant(tenant).intact


def _open_run(tenant: Any, record: Any, make_run: Any, **_: Any) -> str:
    run = make_run(tenant.slug)
    run["status"], run["ended_at"] = "running", None
    record(tenant, run)
    return str(run["run_id"])


def _held_run(tenant: Any, record: Any, make_run: Any, *, alice: Any, **_: Any) -> str:
    [run_id] = _closed_runs(tenant, record, make_run, 1)
    place_legal_hold(tenant, by=alice, reason="matter 2026-40", run_id=run_id)
    return run_id


def _run_of_a_tenant_keeping_everything(tenant: Any, record: Any, make_run: Any, *,
                                        globex: Any, **_: Any) -> str:
    _closed_runs(globex, record, make_run, 1)
    return ""


def _broken_run(tenant: Any, record: Any, make_run: Any, **_: Any) -> str:
    from tests.runs.test_tamper_detection import bypassing_triggers

    [run_id] = _closed_runs(tenant, record, make_run, 1)
    call = ToolCall.objects.filter(run__run_id=run_id)[0]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET output = %s WHERE id = %s",
                       ['{"forged": true}', call.pk])
    return run_id


KEEPERS: dict[str, tuple[Callable[..., str], str]] = {
    "an open run": (_open_run, "1 runs of acme are open or not yet due"),
    "a held run": (_held_run, "runs of acme are held (1 by legal hold)"),
    "a broken chain": (_broken_run, "1 runs of acme do not verify"),
    "a run of a tenant keeping everything": (
        _run_of_a_tenant_keeping_everything, "globex keeps its records (no retention period)"),
}


@pytest.mark.parametrize("keeper", KEEPERS, ids=list(KEEPERS))
def test_a_month_any_run_keeps_is_left_whole_and_its_due_runs_are_deleted(
        keeper, acme_30, globex, alice, record, make_run):
    make_keeper, why = KEEPERS[keeper]
    due = _closed_runs(acme_30, record, make_run)
    kept = make_keeper(acme_30, record, make_run, alice=alice, globex=globex)

    [month] = remove_due_months(timezone.now() + MONTHS_LATER)  # the hourly task's view
    report = apply_retention(acme_30, timezone.now() + MONTHS_LATER)

    assert (month.kept_because, month.dropped) == (why, [])
    [acme_month] = report.months  # acme's own pass weighs the month too, and keeps it
    assert acme_month.kept_because
    assert all(_exists(table) for table in DROPPED_WHOLE)
    assert report.removed_runs == 3
    assert not Run.objects.filter(tenant=acme_30, run_id__in=due).exists()
    assert Run.objects.filter(run_id=kept).exists() or not kept
    breaks = {b.run_id for b in verify_tenant(acme_30).breaks}
    assert breaks == ({kept} if make_keeper is _broken_run else set())


def test_a_dry_run_weighs_the_month_and_drops_nothing(acme_30, record, make_run):
    run_ids = _closed_runs(acme_30, record, make_run, 2)
    report = apply_retention(acme_30, timezone.now() + MONTHS_LATER, dry_run=True)
    [month] = report.months
    assert (month.kept_because, month.runs, month.dropped) == ("", 2, [])
    assert all(_exists(table) for table in DROPPED_WHOLE)
    assert set(run_ids) <= set(Run.objects.values_list("run_id", flat=True))


def test_a_month_stays_while_a_tenant_with_a_longer_period_is_not_yet_due(
        acme_30, globex, record, make_run):
    globex.retention_days = 365
    globex.save()
    _closed_runs(acme_30, record, make_run, 1)
    _closed_runs(globex, record, make_run, 1)
    [month] = remove_due_months(timezone.now() + MONTHS_LATER)
    assert month.kept_because == "1 runs of globex are open or not yet due"
    assert all(_exists(table) for table in DROPPED_WHOLE)


# -- the SQL function, called directly: it checks what it is given -----------------------------

def _signed(tenant: Any, run_ids: list[str], *, counted: bool = True) -> RemovalRecord:
    """A removal record of ``run_ids``, signed as retention signs it; not ``counted``, it
    counts one record a run (fewer than they hold)."""
    runs = Run.objects.filter(tenant=tenant, run_id__in=run_ids)
    later = timezone.now() + MONTHS_LATER
    if counted:
        return sign_removal_of(tenant, later, [run.pk for run in runs])
    return _sign_removal(tenant, later, {run.run_id: [run.last_seq, run.head_hash, 1]
                                         for run in runs})


def _apply(records: list[RemovalRecord], month: date | None) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT ledger_apply_removals(%s, %s)",
                       [[r.pk for r in records], month])
        return list(cursor.fetchone()[0])


def test_a_partition_holding_rows_of_runs_not_listed_is_not_dropped(acme_30, record, make_run):
    listed, unlisted = _closed_runs(acme_30, record, make_run, 2)
    dropped = _apply([_signed(acme_30, [listed])], date.today().replace(day=1))
    assert dropped == []
    assert all(_exists(table) for table in DROPPED_WHOLE)
    assert not ToolCall.objects.filter(run__run_id=listed).exists()
    assert ToolCall.objects.filter(run__run_id=unlisted).exists()


@pytest.mark.parametrize("forgery", ["a run in two records", "a wrong count"])
def test_forged_records_remove_and_drop_nothing(forgery, acme_30, record, make_run):
    run_ids = _closed_runs(acme_30, record, make_run, 2)
    if forgery == "a run in two records":
        records = [_signed(acme_30, run_ids), _signed(acme_30, run_ids[:1])]
        refusal = "in no other record applied with it"
    else:
        records = [_signed(acme_30, run_ids, counted=False)]
        refusal = "would be removed"
    with pytest.raises(DatabaseError, match=refusal), transaction.atomic():
        _apply(records, date.today().replace(day=1))
    assert all(_exists(table) for table in DROPPED_WHOLE)
    assert Run.objects.filter(run_id__in=run_ids).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_callers_own_table_of_that_name_never_runs_its_code(
        acme_30, record, make_run, app_role):  # noqa: F811  (the fixture)
    run_ids = _closed_runs(acme_30, record, make_run, 1)
    removal = _signed(acme_30, run_ids)
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                         dbname=db["NAME"], user=app_role, autocommit=True) as conn:
        # a temporary function and table of the caller's, its trigger meant to run as owner
        conn.execute("CREATE FUNCTION pg_temp.as_owner() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN RAISE EXCEPTION 'caller code ran as %', current_user; END $$")
        conn.execute("CREATE TEMP TABLE ledger_removing (id bigint PRIMARY KEY)")
        conn.execute("CREATE TRIGGER as_owner BEFORE INSERT ON pg_temp.ledger_removing "
                     "FOR EACH ROW EXECUTE FUNCTION pg_temp.as_owner()")
        refused = ""
        try:  # applied with a table of its own, or refused; the caller's code never runs
            conn.execute("SELECT ledger_apply_removals(%s, NULL)", [[removal.pk]])
        except psycopg.errors.InsufficientPrivilege as error:
            refused = str(error)  # the tables' owner is no superuser: it cannot drop it
    removed = not Run.objects.filter(tenant=acme_30, run_id__in=run_ids).exists()
    assert removed != bool(refused), refused
    assert not refused or "must be owner" in refused


def _session(autocommit: bool = False) -> psycopg.Connection[Any]:
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                           dbname=db["NAME"], user=db["USER"] or "postgres",
                           autocommit=autocommit)


@pytest.mark.django_db(transaction=True)
def test_no_table_of_the_drops_is_held_while_another_is_waited_for(acme_30, record, make_run):
    """A dropped partition locks its whole table until commit. Holding the first table while
    waiting for the next, the removal deadlocked with an agent's store that held the next
    and wanted the first (bench.retention's live writer found it)."""
    ensure_partitions()  # this month's, which a test before may have dropped for good
    run_ids = _closed_runs(acme_30, record, make_run)
    result: dict[str, Any] = {}

    def remove() -> None:
        try:
            result["report"] = apply_retention(acme_30, timezone.now() + MONTHS_LATER)
        finally:
            connection.close()

    # the other session outside a transaction: pg_stat_activity is read afresh each time
    with _session() as store, _session(autocommit=True) as other:
        # an agent's store in the middle of its transaction: its model calls inserted
        store.execute("LOCK TABLE ONLY runs_modelcall IN ROW EXCLUSIVE MODE")
        removing = threading.Thread(target=remove)
        removing.start()
        for _ in range(1200):  # the removal waits for the store's table
            [(waiting,)] = other.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE %s", ["%ledger_apply_removals%"]).fetchall()
            if waiting:
                break
            time.sleep(0.05)
        assert waiting
        # the other tables whose months go stay open to other stores meanwhile
        other.execute("SET lock_timeout = '2s'")
        for table in ("runs_step", "runs_toolcall"):
            with other.transaction():
                other.execute(f"LOCK TABLE ONLY {table} IN ROW EXCLUSIVE MODE")
        store.rollback()  # the store ends: the removal goes on
        removing.join(timeout=60)

    [month] = result["report"].months
    assert month.kept_because == ""
    assert sorted(month.dropped) == sorted(DROPPED_WHOLE)
    assert not Run.objects.filter(tenant=acme_30, run_id__in=run_ids).exists()
