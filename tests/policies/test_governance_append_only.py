"""Decisions, approval requests and votes are governance records: on PostgreSQL the database
refuses to change or remove them, for the tables' owner as well (triggers), and the portal's own
role (``LEDGER_APP_DB_ROLE``) may only move an approval request's state, once."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from django.db import DatabaseError, connection, transaction

from core.db_roles import grant_app_role
from policies.models import Decision

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROLE = "ledger_app_test"


def refused(statement: str, *params: Any) -> str:
    """Run ``statement`` as the tables' owner (no trigger bypass); return the refusal."""
    with pytest.raises(DatabaseError) as refusal, transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute(statement, params)
    return str(refusal.value)


def test_decisions_and_votes_are_never_changed_or_removed(decided):
    decision, vote = decided["decision"], decided["vote"]
    assert "append-only" in refused("UPDATE policies_decision SET effect = 'deny' WHERE id = %s",
                                    decision.pk)
    assert "append-only" in refused("DELETE FROM policies_decision WHERE id = %s", decision.pk)
    assert "append-only" in refused("UPDATE approvals_vote SET approve = false WHERE id = %s",
                                    vote.pk)
    assert "append-only" in refused("DELETE FROM approvals_vote WHERE id = %s", vote.pk)
    assert "append-only" in refused("TRUNCATE approvals_vote CASCADE")
    assert Decision.objects.get(pk=decision.pk).effect == decision.effect


def test_what_an_approval_request_asked_for_and_its_decision_stay(decided):
    request = decided["request"]
    assert "cannot change" in refused(
        "UPDATE approvals_approvalrequest SET arguments = '{\"cents\": 50000}' WHERE id = %s",
        request.pk)
    assert "stays so" in refused(
        "UPDATE approvals_approvalrequest SET status = 'pending' WHERE id = %s", request.pk)
    assert "not undone" in refused(
        "UPDATE approvals_approvalrequest SET consumed_by_id = NULL WHERE id = %s", request.pk)
    assert "append-only" in refused("DELETE FROM approvals_approvalrequest WHERE id = %s",
                                    request.pk)
    request.refresh_from_db()
    assert (request.status, request.arguments) == ("approved", {"cents": 500})


def test_the_app_role_may_not_even_try(decided):
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE])
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER")
    grant_app_role(ROLE)
    db = connection.settings_dict
    with psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                         dbname=db["NAME"], user=ROLE, autocommit=True) as conn:
        for statement in ("UPDATE policies_decision SET effect = 'allow'",
                          "DELETE FROM approvals_vote",
                          "UPDATE approvals_approvalrequest SET arguments = '{}'::jsonb",
                          "ALTER TABLE policies_decision DISABLE TRIGGER ALL"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
