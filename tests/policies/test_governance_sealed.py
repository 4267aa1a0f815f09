"""Decisions, what approval requests asked for, and votes are sealed by the tenant digests, and
`ledger verify` names any sealed one changed, removed or slipped in below the application (as
a superuser switching the triggers off would), and an approval request whose state its sealed
records do not support."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from policies.models import Decision
from runs.integrity import seal_tenant_digest, verify_tenant
from tests.triggers import bypassing_triggers

LABELS = {"policies.Decision", "approvals.ApprovalRequest", "approvals.Vote"}


def seal(tenant: Any) -> Any:
    """A digest sealing everything recorded so far (past the settle time)."""
    return seal_tenant_digest(tenant, timezone.now() + timedelta(minutes=1))


def governance_breaks(tenant: Any) -> list[Any]:
    return [b for b in verify_tenant(tenant).breaks if b.run_id.startswith("governance:")]


def test_a_digest_seals_every_governance_record_and_they_verify(acme, decided):
    digest = seal(acme)
    assert set(digest.governance) == LABELS
    assert digest.governance["policies.Decision"]["count"] == 2  # held, then allowed
    assert digest.governance["approvals.Vote"]["count"] == 1
    assert verify_tenant(acme).intact
    assert seal(acme) is None  # nothing new: no digest


def test_records_still_settling_wait_for_the_next_digest(acme, decided):
    digest = seal_tenant_digest(acme)  # the records are seconds old
    assert digest is not None
    assert digest.governance["policies.Decision"]["count"] == 0
    later = seal(acme)
    assert later is not None
    assert later.governance["policies.Decision"]["count"] == 2
    assert verify_tenant(acme).intact


def test_a_decision_changed_after_sealing_is_named(acme, decided):
    seal(acme)
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE policies_decision SET effect = 'allow' WHERE id = %s",
                       [Decision.objects.filter(effect="require_approval").get().pk])
    [problem] = governance_breaks(acme)
    assert (problem.run_id, problem.problem) == ("governance:policies.Decision", "modified")
    assert "digest #1" in problem.detail


def test_a_vote_removed_after_sealing_is_named(acme, decided):
    seal(acme)
    with bypassing_triggers() as cursor:
        cursor.execute("DELETE FROM approvals_vote WHERE id = %s", [decided["vote"].pk])
    problems = {(b.run_id, b.problem) for b in governance_breaks(acme)}
    assert ("governance:approvals.Vote", "removed") in problems
    # and the request now says approved without the vote it needs
    assert ("governance:approvals.ApprovalRequest", "modified") in problems


def test_what_a_request_asked_for_changed_after_sealing_is_named(acme, decided):
    seal(acme)
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE approvals_approvalrequest SET arguments = %s WHERE id = %s",
                       ['{"cents": 50000}', decided["request"].pk])
    [problem] = governance_breaks(acme)
    assert (problem.run_id, problem.problem) == ("governance:approvals.ApprovalRequest",
                                                 "modified")


def test_a_request_approved_without_votes_is_named_even_before_any_digest(acme, decided,
                                                                          key_client):
    agent = key_client(acme, ["ingest"])
    held = agent.post("/api/v1/decisions/", {
        "run_id": "run-2", "call_id": "refund-2", "agent_id": "billing-bot",
        "tool": "refund_payment", "action_class": "write", "arguments": {"cents": 9}},
        format="json").json()
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE approvals_approvalrequest SET status = 'approved' WHERE id = %s",
                       [held["approval"]["id"]])
    [problem] = governance_breaks(acme)
    assert problem.run_id == "governance:approvals.ApprovalRequest"
    assert f"request {held['approval']['id']} says approved without the votes" in problem.detail


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_record_whose_transaction_is_still_open_waits_for_the_next_digest(acme, decided):
    """Ids are handed out before commit: a decision written by a transaction still open when
    the digest is sealed must not fall inside what it seals, or it would later look slipped
    in."""
    written, release = threading.Event(), threading.Event()

    def slow_transaction() -> None:
        try:
            with transaction.atomic():
                Decision.objects.create(
                    tenant=acme, tool="lookup", action_class="read", mode="live", input={},
                    effect="allow", engine="embedded", latency_us=1, decided_by="slow")
                written.set()
                release.wait(30)
        finally:
            connection.close()

    thread = threading.Thread(target=slow_transaction)
    thread.start()
    assert written.wait(10)
    time.sleep(0.05)
    later = Decision.objects.create(tenant=acme, tool="lookup", action_class="read",
                                    mode="live", input={}, effect="allow", engine="embedded",
                                    latency_us=1, decided_by="after it")
    digest = seal(acme)  # its settle time would cover both; the open transaction holds it back
    release.set()
    thread.join(10)
    assert digest is not None
    assert digest.governance["policies.Decision"]["upto"] < later.pk
    assert verify_tenant(acme).intact
    assert seal(acme).governance["policies.Decision"]["upto"] == later.pk
    assert verify_tenant(acme).intact


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_check_reads_outside_a_transaction_too(acme, decided):
    """The check reads through named cursors, which live in a transaction: it opens one when
    its caller has none (``ledger verify`` has one; the benchmark and a shell may not)."""
    from runs import governance_seal

    digest = seal(acme)
    assert not connection.in_atomic_block
    assert governance_seal.check(acme, [(digest.number, digest.governance)]) == []


@pytest.mark.postgres
def test_a_record_with_no_canonical_form_is_never_sealed(acme, decided):
    """The sealer stops at it (its next rows still being fetched) and the connection reads
    on."""
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE policies_decision SET input = %s::jsonb WHERE id = %s",
                       ['{"n": 18446744073709551617}', decided["decision"].pk])
    with pytest.raises(ValueError, match="no canonical form"):
        seal(acme)
    assert Decision.objects.filter(tenant=acme).count() == 2


@pytest.mark.postgres
def test_each_kind_read_as_columns_hashes_as_record_hash_does(acme, decided):
    """Sealing and checking both read the columns: agreeing with each other is not enough."""
    from runs.governance_seal import (
        KINDS,
        built_rows,
        content_columns,
        record_hash,
    )

    for kind in KINDS:
        rows = kind.rows(acme.pk).order_by("pk")
        expected = [record_hash(kind, row) for row in rows.values(*kind.fields)]
        _, reader = content_columns(kind)
        with transaction.atomic():
            hashed = [reader.hashed(row)[0] for row in built_rows(kind, rows)]
        assert expected, kind.label
        assert hashed == expected, kind.label
