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
