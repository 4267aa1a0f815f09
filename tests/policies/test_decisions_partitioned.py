"""On PostgreSQL decisions are partitioned by month (core/partitions.py): the guarantees of the
plain table hold all the same (an id is stored once, a reference to a decision names one that
exists), every row finds a partition, and the next months' partitions are made ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction

from core.db_roles import grant_app_role
from core.partitions import ensure_partitions, partitions
from policies.models import Decision

pytestmark = pytest.mark.postgres
COLUMNS = ("run_id, call_id, agent_id, tool, action_class, declared_action_class, mode, input, "
           "effect, reason, matched_rules, engine, engine_answers, latency_us, decided_by, "
           "tenant_id")


def _sql(statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _copy_of(decision: Decision, *, pk: int | None, created_at: datetime) -> None:
    ident = "id, " if pk is not None else ""
    _sql(f"INSERT INTO policies_decision ({ident}{COLUMNS}, created_at) "
         f"SELECT {'%s, ' if pk is not None else ''}{COLUMNS}, %s FROM policies_decision "
         "WHERE id = %s", *([pk] if pk is not None else []), created_at, decision.pk)


def _partition_of(pk: int) -> str:
    return _sql("SELECT tableoid::regclass::text FROM policies_decision WHERE id = %s", pk)[0][0]


def test_decisions_live_in_their_months_partition(decided):
    decision = decided["decision"]
    now = datetime.now(UTC)
    assert _partition_of(decision.pk) == f"policies_decision_p{now:%Y%m}"
    names = {p.name for p in partitions() if p.table == "policies_decision"}
    assert {"policies_decision_default", f"policies_decision_p{now:%Y%m}"} <= names
    assert Decision.objects.get(pk=decision.pk).effect == "allow"  # the ORM sees no difference


def test_a_second_row_with_a_stored_id_is_refused_in_any_partition(decided):
    decision = decided["decision"]
    before = Decision.objects.count()
    with pytest.raises(IntegrityError, match="duplicate key"), transaction.atomic():
        _copy_of(decision, pk=decision.pk, created_at=decision.created_at - timedelta(days=40))
    _copy_of(decision, pk=None, created_at=decision.created_at - timedelta(days=40))
    assert Decision.objects.count() == before + 1  # a new id goes in


def test_the_id_check_probes_an_index_however_the_month_grew_since_it_was_planned(decided):
    """A session plans the id check once. A month's partition starts out (nearly) empty as
    the planner knows it, so a scan of it was the cheapest plan then; kept, every decision
    stored later would read the whole month before it."""
    decision = decided["decision"]
    month = _partition_of(decision.pk)

    def scans_of_the_month() -> int:
        return _sql("SELECT pg_stat_get_xact_numscans(%s::regclass)", month)[0][0]

    _sql("ANALYZE policies_decision")  # the month as the planner knows it now: a row or two
    for _ in range(8):  # past the first five calls' own plans: the session's plan is made
        _copy_of(decision, pk=None, created_at=decision.created_at)
    _sql(f"INSERT INTO policies_decision ({COLUMNS}, created_at) SELECT {COLUMNS}, created_at "
         "FROM policies_decision, generate_series(1, 2000) WHERE id = %s", decision.pk)
    before = scans_of_the_month()
    _copy_of(decision, pk=None, created_at=decision.created_at)
    assert scans_of_the_month() == before  # an index probe: no scan of the month's rows


# The trigger function installed by the first partitioning upgrade: one for every table, the
# table named at run time by a dynamic EXECUTE (planned again on every row).
GENERIC_ID_CHECK = r"""
CREATE OR REPLACE FUNCTION ledger_partitioned_id_unique() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE taken boolean;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(TG_ARGV[0]), hashtext(NEW.id::text));
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE id = $1)', TG_ARGV[0])
    INTO taken USING NEW.id;
  IF taken THEN
    RAISE EXCEPTION 'duplicate key value violates unique constraint "%_id_unique"', TG_ARGV[0]
      USING ERRCODE = 'unique_violation';
  END IF;
  RETURN NEW;
END $$;
DROP TRIGGER ledger_partitioned_id_unique ON policies_decision;
CREATE TRIGGER ledger_partitioned_id_unique BEFORE INSERT OR UPDATE OF id ON policies_decision
  FOR EACH ROW EXECUTE FUNCTION ledger_partitioned_id_unique('policies_decision');
"""


def _id_check_functions() -> dict[str, str]:
    return dict(_sql("SELECT DISTINCT tgrelid::regclass::text, tgfoid::regproc::text FROM "
                     "pg_trigger WHERE tgname = 'ledger_partitioned_id_unique' AND tgrelid IN "
                     "('policies_decision'::regclass, 'runs_otlpevent'::regclass)"))


def test_each_table_checks_ids_with_a_function_of_its_own_that_is_planned_once(decided):
    assert _id_check_functions() == {
        "policies_decision": "ledger_partitioned_id_unique_policies_decision",
        "runs_otlpevent": "ledger_partitioned_id_unique_runs_otlpevent"}
    source = _sql("SELECT prosrc FROM pg_proc WHERE proname = "
                  "'ledger_partitioned_id_unique_policies_decision'")[0][0]
    assert "EXECUTE" not in source.upper().replace("EXECUTE FUNCTION", "")


def test_an_install_with_the_generic_id_check_is_upgraded_and_still_refuses_a_stored_id(decided):
    from core.partitions import planned_id_check

    decision = decided["decision"]
    with connection.cursor() as cursor:
        cursor.execute(GENERIC_ID_CHECK)  # no parameters: its % are PL/pgSQL's
    assert _id_check_functions()["policies_decision"] == "ledger_partitioned_id_unique"
    with connection.schema_editor() as editor:  # what migration policies 0015 runs
        planned_id_check("policies_decision")(None, editor)
    assert _id_check_functions()["policies_decision"] == (
        "ledger_partitioned_id_unique_policies_decision")
    # no trigger calls the generic function any more: it is gone
    assert _sql("SELECT to_regprocedure('ledger_partitioned_id_unique()')") == [(None,)]
    with pytest.raises(IntegrityError, match="duplicate key"), transaction.atomic():
        _copy_of(decision, pk=decision.pk, created_at=decision.created_at - timedelta(days=40))


def test_a_reference_to_a_missing_decision_is_refused_at_commit(decided, key_client, acme):
    from approvals.models import ApprovalRequest

    agent = key_client(acme, ["ingest"])
    held = agent.post("/api/v1/decisions/", {
        "run_id": "run-2", "call_id": "refund-2", "agent_id": "billing-bot",
        "tool": "refund_payment", "action_class": "write", "arguments": {"cents": 900}},
        format="json").json()
    request = ApprovalRequest.objects.get(pk=held["approval"]["id"])
    # deferred to commit, as Django's foreign keys are; SET CONSTRAINTS brings the check here
    missing = Decision.objects.latest("pk").pk + 1000
    with pytest.raises(IntegrityError, match="foreign key"):
        _consume(request.pk, missing)
    _consume(request.pk, held["id"])  # an existing decision is a good reference


def _consume(request_pk: int, decision_pk: int) -> None:
    try:
        with transaction.atomic():
            _sql("UPDATE approvals_approvalrequest SET consumed_by_id = %s WHERE id = %s",
                 decision_pk, request_pk)
            _sql("SET CONSTRAINTS ALL IMMEDIATE")
    finally:
        _sql("SET CONSTRAINTS ALL DEFERRED")


def test_partitions_are_made_ahead_once(decided):
    ahead = datetime.now(UTC).replace(day=1) + timedelta(days=95)
    name = f"policies_decision_p{ahead:%Y%m}"
    _sql(f"DROP TABLE {name}")
    assert name in ensure_partitions(months_ahead=3)
    assert ensure_partitions(months_ahead=3) == []


def test_a_row_no_month_covers_lands_in_the_default_partition(decided):
    decision = decided["decision"]
    far = datetime.now(UTC).replace(day=1) + timedelta(days=32 * 14)
    _copy_of(decision, pk=None, created_at=far)
    stray = Decision.objects.latest("pk")
    assert _partition_of(stray.pk) == "policies_decision_default"
    made = ensure_partitions(months_ahead=16)
    # that month's rows are in the default partition: it is left alone, the others are made
    assert f"policies_decision_p{far:%Y%m}" not in made
    assert made


def test_the_applications_role_makes_partitions_but_cannot_touch_one(decided):
    _sql("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = "
         "'ledger_app_partitions') THEN CREATE ROLE ledger_app_partitions; END IF; END $$")
    grant_app_role("ledger_app_partitions")
    month = f"policies_decision_p{datetime.now(UTC):%Y%m}"
    with transaction.atomic():
        _sql("SET LOCAL ROLE ledger_app_partitions")
        assert _sql("SELECT count(*) FROM policies_decision")[0][0] >= 1
        assert _sql("SELECT * FROM ledger_ensure_partitions(3)") == []
        assert not _sql("SELECT has_table_privilege(%s, 'SELECT')", month)[0][0]
