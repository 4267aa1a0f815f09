"""On PostgreSQL the ledger's record tables are partitioned by the month the portal stored each
record (runs 0035), and every guarantee of the plain tables holds across months: a tool call's
id, ``(tenant, call_id)`` and ``(run, seq)`` are stored once, whatever month the second copy
would land in, including when two sessions race; a reference to a record names one that
exists, and a referenced record cannot be removed; the keys leave with the records; the
application's role cannot touch the keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from core.db_roles import grant_app_role
from core.partitions import partitions
from runs.models import Annotation, ModelCall, Step, ToolCall

pytestmark = [pytest.mark.postgres,
              pytest.mark.tenant_scope_exempt(reason="reads and writes the tables in SQL")]
RECORD_MODELS = (Step, ModelCall, ToolCall, Annotation)


def _sql(statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _copy_of(call: ToolCall, **changes: Any) -> tuple[str, dict[str, Any]]:
    """An INSERT of a copy of ``call`` with ``changes`` (column -> value), and its parameters:
    a new id unless one is given, recorded 40 days earlier (the month before's partition)."""
    changes = {"recorded_at": call.recorded_at - timedelta(days=40), **changes}
    columns = [str(f.column) for f in ToolCall._meta.concrete_fields
               if f.column != "id" or "id" in changes]
    values = [f"%({c})s" if c in changes else c for c in columns]
    return (f"INSERT INTO runs_toolcall ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM runs_toolcall WHERE id = {call.pk}", changes)


def _insert(sql: str, params: dict[str, Any] | None = None) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # foreign keys: here, not at commit


@pytest.fixture
def call(acme: Any, make_run: Any, record: Any) -> ToolCall:
    record(acme, make_run(), make_run())
    return ToolCall.objects.filter(tenant=acme).earliest("pk")


def test_records_live_in_the_month_the_portal_stored_them(call):
    month = f"{datetime.now(UTC):%Y%m}"
    for model in RECORD_MODELS:
        table = model._meta.db_table
        homes = _sql(f"SELECT DISTINCT tableoid::regclass::text FROM {table}")
        assert homes == [(f"{table}_p{month}",)]
        # one key row per record
        assert _sql(f"SELECT count(*) FROM {table}_keys") == [(model.objects.count(),)]


@pytest.mark.parametrize(("change", "constraint"), [
    ({"seq": 9_000}, "tool_call_id_unique_per_tenant"),  # the same call id
    ({"call_id": "another-call"}, "tool_call_seq_unique_per_run"),  # the same place in the run
    ({"call_id": "another-call", "seq": 9_000, "id": "same"}, "runs_toolcall_keys_pkey"),
])
def test_a_key_stored_in_one_month_is_refused_in_another(call, change, constraint):
    if change.get("id") == "same":
        change = {**change, "id": call.pk}
    before = ToolCall.objects.count()
    with pytest.raises(IntegrityError, match=constraint):
        _insert(*_copy_of(call, **change))
    assert ToolCall.objects.count() == before
    _insert(*_copy_of(call, call_id="another-call", seq=9_000))  # new keys go in, a month back
    stored = ToolCall.objects.get(call_id="another-call")
    home = _sql("SELECT tableoid::regclass::text FROM runs_toolcall WHERE id = %s", stored.pk)
    assert home != [(f"runs_toolcall_p{call.recorded_at:%Y%m}",)]  # not the original's


def _connect() -> psycopg.Connection:
    settings = connection.settings_dict
    return psycopg.connect(host=settings["HOST"], port=settings["PORT"] or 5432,
                           user=settings["USER"], dbname=settings["NAME"])


def test_two_sessions_storing_one_call_id_the_second_waits_for_the_first_then_is_refused(
        transactional_db, acme, make_run, record):
    record(acme, make_run())
    call = ToolCall.objects.earliest("pk")
    first_copy = _copy_of(call, call_id="raced", seq=9_000)
    second_copy = _copy_of(call, call_id="raced", seq=9_001)
    with _connect() as first, _connect() as second:
        first.execute(*first_copy)  # not committed yet
        second.execute("SET lock_timeout = '300ms'")
        # not let in beside the first (as a unique index would, it waits on it) ...
        with pytest.raises(psycopg.errors.LockNotAvailable):
            second.execute(*second_copy)
        second.rollback()
        first.commit()
        # ... and refused once the first has committed
        with pytest.raises(psycopg.errors.UniqueViolation, match="tool_call_id_unique"):
            second.execute(*second_copy)
    assert ToolCall.objects.filter(call_id="raced").count() == 1


def test_a_reference_to_a_record_must_name_one_that_exists(call):
    from incidents.models import Incident

    incident = Incident.objects.create(tenant=call.tenant, title="refund twice")
    with pytest.raises(IntegrityError, match="foreign key"):
        _insert("INSERT INTO incidents_incident_tool_calls (incident_id, toolcall_id) "
                "VALUES (%(incident)s, -1)", {"incident": incident.pk})
    incident.tool_calls.add(call)  # an existing tool call is a good reference
    with pytest.raises(IntegrityError, match="foreign key"):  # a retry of a missing call
        _insert(*_copy_of(call, call_id="retry", seq=9_000, retry_of_id=-5))
    _insert(*_copy_of(call, call_id="retry", seq=9_000, retry_of_id=call.pk))


def test_a_referenced_record_cannot_be_removed_and_an_unreferenced_one_takes_its_keys(call):
    from incidents.models import Incident

    Incident.objects.create(tenant=call.tenant, title="refund twice").tool_calls.add(call)
    other = ToolCall.objects.exclude(pk=call.pk).filter(tenant=call.tenant).earliest("pk")
    remove = ("SET LOCAL ledger.removal = 'retention'; "  # past the append-only trigger
              "DELETE FROM runs_toolcall WHERE id = %(pk)s")
    with pytest.raises(IntegrityError, match="foreign key"):
        _insert(remove, {"pk": call.pk})
    _insert(remove, {"pk": other.pk})
    assert _sql("SELECT count(*) FROM runs_toolcall_keys WHERE id = %s", other.pk) == [(0,)]
    assert _sql("SELECT count(*) FROM runs_toolcall_keys WHERE id = %s", call.pk) == [(1,)]


def test_the_app_role_appends_records_and_reads_their_keys_but_cannot_change_them(acme, make_run):
    from runs.ingest_schema import parse_batch
    from runs.services import ingest_batch

    _sql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
         "'ledger_app_keys') THEN CREATE ROLE ledger_app_keys; END IF; END $$")
    grant_app_role("ledger_app_keys")
    with transaction.atomic():
        _sql("SET LOCAL ROLE ledger_app_keys")
        ingest_batch(acme, parse_batch({"runs": [make_run()]}), recorded_by="test")
        _sql("SELECT * FROM ledger_drop_empty_partitions()")  # its beat task's, after retention
        for model in RECORD_MODELS:
            side = f"{model._meta.db_table}_keys"
            # read (the admin's deep pages take their keys from it), never written
            assert _sql("SELECT has_table_privilege(%s, 'SELECT')", side)[0][0]
            assert not _sql("SELECT has_table_privilege(%s, 'INSERT') OR has_table_privilege("
                            "%s, 'UPDATE') OR has_table_privilege(%s, 'DELETE') OR "
                            "has_table_privilege(%s, 'TRUNCATE')", side, side, side, side)[0][0]
    assert ToolCall.objects.filter(tenant=acme).exists()


def test_a_past_months_partition_retention_emptied_is_dropped_and_no_other(call):
    from core.partitions import create_month, drop_empty_partitions

    now = datetime.now(UTC).date().replace(day=1)
    emptied = (now - timedelta(days=95)).replace(day=1)
    kept = (now - timedelta(days=62)).replace(day=1)
    with connection.cursor() as cursor:
        for month in (emptied, kept):
            create_month(cursor, "runs_toolcall", month)
    _insert(*_copy_of(call, call_id="old-call", seq=9_000,
                      recorded_at=datetime(kept.year, kept.month, 2, tzinfo=UTC)))
    current = f"runs_annotation_p{now:%Y%m}"
    _sql("SET LOCAL ledger.removal = 'retention'")
    _sql("DELETE FROM runs_annotation")  # this month's emptied

    assert drop_empty_partitions() == [f"runs_toolcall_p{emptied:%Y%m}"]
    names = {p.name for p in partitions()}
    assert f"runs_toolcall_p{kept:%Y%m}" in names  # holds a record
    assert current in names  # this month's stays, empty or not
    assert ToolCall.objects.filter(call_id="old-call").exists()


def test_a_buffered_span_changes_state_never_its_keys_and_is_stored_once_across_months(acme):
    from runs.models import OtlpSpan, OtlpTrace

    now = datetime.now(UTC)
    trace = OtlpTrace.objects.create(tenant=acme, trace_id="ab" * 16, run_id="otel-x",
                                     first_received_at=now, last_activity_at=now)
    span = OtlpSpan.objects.create(tenant=acme, trace=trace, span_id="cd" * 8, body={},
                                   received_at=now)
    OtlpSpan.objects.filter(pk=span.pk).update(state="recorded")  # its state moves
    with pytest.raises(IntegrityError, match="keys of a row of runs_otlpspan cannot change"), \
            transaction.atomic():
        OtlpSpan.objects.filter(pk=span.pk).update(span_id="ef" * 8)
    with pytest.raises(IntegrityError, match="otlp_span_unique_per_trace"), transaction.atomic():
        OtlpSpan.objects.create(tenant=acme, trace=trace, span_id="cd" * 8, body={},
                                received_at=now - timedelta(days=40))  # the month before
    assert _sql("SELECT count(*) FROM runs_otlpspan_keys") == [(1,)]
