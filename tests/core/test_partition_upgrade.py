"""An existing database whose decisions, OpenTelemetry event buffer and record tables are plain
tables upgrades to monthly partitions (policies 0014, runs 0031, 0035 and 0036) keeping every row,
every reference to a decision or a record and every guarantee; and the upgrade can be undone.

The database is the test's own; ``manage.py`` runs in a subprocess, as an operator's upgrade
would (tests/operations/test_upgrade_from_runs.py does the same)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.operations.test_upgrade_from_runs import manage, upgrade_database  # noqa: F401

pytestmark = pytest.mark.postgres
RECORD_TABLES = ("runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation")
BEFORE = [("policies", "0013_backtests_read_redacted_arguments"),
          ("runs", "0030_admin_seek_indexes")]

POPULATE = """
from django.core.management import call_command
from django.utils import timezone
from operations.models import Rollback
from policies.models import Decision
from runs.models import OtlpEvent, ToolCall

call_command("seed_demo", no_jobs=True, no_story=True)
call = ToolCall.objects.filter(status="succeeded").select_related("run", "tool").first()
tenant = call.tenant
made = [Decision.objects.create(tenant=tenant, call_id=f"c-{i}", tool=call.tool.name,
                                action_class="write", mode="live", effect="allow",
                                engine="embedded", input={"i": i}, latency_us=i)
        for i in range(5)]
Rollback.objects.create(tenant=tenant, tool_call=call, run=call.run, idempotency_key="rb-1",
                        status="succeeded", decision=made[2])
for i in range(3):
    OtlpEvent.objects.create(tenant=tenant, trace_id=f"{i:032x}", span_id=f"{i:016x}",
                             body={"name": "gen_ai.user.message"}, received_at=timezone.now())
print("populated", Decision.objects.count())
"""

CHECK = """
from policies.models import Decision
from operations.models import Rollback
from runs.models import OtlpEvent

print("decisions", Decision.objects.count(), sorted(Decision.objects.filter(
    call_id__startswith="c-").values_list("latency_us", flat=True)))
print("rollback", Rollback.objects.get(idempotency_key="rb-1").decision.call_id)
print("events", OtlpEvent.objects.count())
new = Decision.objects.create(tenant=Decision.objects.first().tenant, call_id="c-new",
                              tool="t", action_class="read", mode="live", effect="allow",
                              engine="embedded", input={}, latency_us=1)
print("new id after old ones", new.pk > max(Decision.objects.exclude(pk=new.pk)
                                            .values_list("pk", flat=True)))
"""


def _fingerprint(conn: psycopg.Connection, table: str) -> tuple[Any, ...] | None:
    return conn.execute(f"SELECT count(*), sum(id), md5(string_agg(chain_hash, ',' "
                        f"ORDER BY id)) FROM {table}").fetchone()


def _store_again_in_another_month(conn: psycopg.Connection) -> None:
    """A copy of a tool call under a new id, recorded 70 days earlier."""
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE again ON COMMIT DROP AS SELECT * FROM runs_toolcall "
                     "WHERE id = (SELECT tool_call_id FROM runs_rollback)")
        conn.execute("UPDATE again SET id = id + 1000000, "
                     "recorded_at = recorded_at - interval '70 days'")
        conn.execute("INSERT INTO runs_toolcall SELECT * FROM again")


def _homes(conn: psycopg.Connection, table: str) -> tuple[Any, ...] | None:
    return conn.execute(f"SELECT count(DISTINCT tableoid) FROM {table}").fetchone()


def _partitioned(conn: psycopg.Connection) -> set[str]:
    return {row[0] for row in conn.execute(
        "SELECT partrelid::regclass::text FROM pg_partitioned_table")}


def test_plain_tables_upgrade_to_monthly_partitions_and_back(upgrade_database):  # noqa: F811
    env = upgrade_database
    manage(env, "migrate", "--no-input", "-v0")
    for app, name in BEFORE:
        manage(env, "migrate", app, name, "--no-input", "-v0")
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        assert _partitioned(conn) == set()
    assert "populated" in manage(env, "shell", "-c", POPULATE)
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        # some decisions from months ago (past the triggers, as a restore would write them)
        conn.execute("SET session_replication_role = replica")
        conn.execute("UPDATE policies_decision SET created_at = created_at - interval '70 days'"
                     " WHERE call_id IN ('c-0', 'c-1')")
        before = conn.execute("SELECT count(*), sum(id), sum(latency_us) FROM "
                              "policies_decision").fetchone()
        for table in RECORD_TABLES:  # a run's records from months ago
            conn.execute(f"UPDATE {table} SET recorded_at = recorded_at - interval '70 days' "
                         f"WHERE run_id = (SELECT min(run_id) FROM {table})")
        records = {table: _fingerprint(conn, table) for table in RECORD_TABLES}

    manage(env, "migrate", "--no-input", "-v0")

    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        assert _partitioned(conn) == {"policies_decision", "runs_otlpevent", "runs_otlpspan",
                                      *RECORD_TABLES}
        for table in RECORD_TABLES:
            assert _fingerprint(conn, table) == records[table]
            assert _homes(conn, table) == (2,)  # two months' partitions
            # every record's keys, in the side table
            assert conn.execute(f"SELECT count(*) FROM {table}_keys").fetchone() == (
                records[table][0],)  # type: ignore[index]
        # the references to a tool call: foreign keys to its keys, both halves
        assert sorted(conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE confrelid = "
            "'runs_toolcall_keys'::regclass AND conparentid = 0").fetchall()) == [
            ("incidents_incident_tool_calls",), ("runs_rollback",), ("runs_toolcall",)]
        with pytest.raises(psycopg.errors.UniqueViolation, match=r"tool_call_(id|seq)_unique"):
            _store_again_in_another_month(conn)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("UPDATE runs_rollback SET tool_call_id = -1")
        assert conn.execute("SELECT count(*), sum(id), sum(latency_us) FROM "
                            "policies_decision").fetchone() == before
        homes = {row[0] for row in conn.execute(
            "SELECT tableoid::regclass::text FROM policies_decision WHERE call_id LIKE 'c-%'")}
        assert len(homes) == 2  # two months' partitions
        assert "policies_decision_default" not in homes
        # the references to decisions: a trigger each, in place of the foreign key
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE confrelid = "
                            "'policies_decision'::regclass").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgfoid = "
                            "'ledger_partitioned_reference'::regproc").fetchone() == (3,)
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO policies_decision SELECT * FROM policies_decision "
                         "WHERE call_id = 'c-3'")
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("UPDATE runs_rollback SET decision_id = -1")
    checked = manage(env, "shell", "-v0", "-c", CHECK).splitlines()
    assert checked == ["decisions 5 [0, 1, 2, 3, 4]", "rollback c-2", "events 3",
                       "new id after old ones True"]
    assert "No changes detected" in manage(env, "makemigrations", "--check", "--dry-run")
    assert "policies_decision_default" in manage(env, "partitions", "--ensure")

    for app, name in BEFORE:  # and back: plain tables, foreign keys again
        manage(env, "migrate", app, name, "--no-input", "-v0")
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        assert _partitioned(conn) == set()
        assert conn.execute("SELECT count(*) FROM policies_decision").fetchone() == (6,)
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE confrelid = "
                            "'policies_decision'::regclass").fetchone() == (3,)
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("UPDATE runs_rollback SET decision_id = -1")
        for table in RECORD_TABLES:  # and the records: their keys are the table's again
            assert _fingerprint(conn, table) == records[table]
            assert conn.execute("SELECT to_regclass(%s)", [f"{table}_keys"]).fetchone() == (
                None,)
        with pytest.raises(psycopg.errors.UniqueViolation, match=r"tool_call_(id|seq)_unique"):
            _store_again_in_another_month(conn)
        assert conn.execute("SELECT count(*) FROM pg_constraint WHERE confrelid = "
                            "'runs_toolcall'::regclass").fetchone() == (3,)
