"""On PostgreSQL the database refuses UPDATE, DELETE and TRUNCATE of ledger rows itself."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.db.utils import IntegrityError, InternalError

from runs.models import Run, ToolCall

pytestmark = pytest.mark.postgres
REFUSED = (IntegrityError, InternalError)


@pytest.fixture
def recorded(acme, record, make_run):
    record(acme, make_run())
    return ToolCall.objects.first()


def _sql(statement: str, *params: Any) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.mark.parametrize("table", ["runs_step", "runs_modelcall", "runs_toolcall"])
def test_update_is_refused(recorded, table):
    with pytest.raises(REFUSED, match="append-only: UPDATE"):
        _sql(f"UPDATE {table} SET content_hash = 'x'")


@pytest.mark.parametrize("table", ["runs_run", "runs_step", "runs_toolcall"])
def test_delete_is_refused(recorded, table):
    with pytest.raises(REFUSED, match="append-only: DELETE"):
        _sql(f"DELETE FROM {table}")


@pytest.mark.parametrize("table", ["runs_run", "runs_toolcall", "runs_annotation",
                                   "runs_tenantdigest"])
def test_truncate_is_refused(recorded, table):
    _sql("SET CONSTRAINTS ALL IMMEDIATE")  # the test's open transaction defers FK checks
    with pytest.raises(REFUSED, match="append-only: TRUNCATE"):
        _sql(f"TRUNCATE {table} CASCADE")


def test_a_runs_identity_cannot_change_but_its_tip_moves_forward(recorded):
    run = Run.objects.get(pk=recorded.run_id)
    with pytest.raises(REFUSED, match="only a run's tip may move"):
        _sql("UPDATE runs_run SET goal = 'rewritten' WHERE id = %s", run.pk)
    with pytest.raises(REFUSED, match="only grows"):
        _sql("UPDATE runs_run SET last_seq = 0 WHERE id = %s", run.pk)
    _sql("UPDATE runs_run SET last_seq = last_seq + 1 WHERE id = %s", run.pk)
    assert Run.objects.get(pk=run.pk).last_seq == run.last_seq + 1
    assert ToolCall.objects.filter(pk=recorded.pk).exists()
