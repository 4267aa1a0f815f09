"""Four-eyes: nobody decides their own request; rejecting and exfil need a justification;
exfil needs two approvers; every decision is an annotation on the run."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from approvals.models import Status
from approvals.services import ApprovalError, decide_approval, request_approval
from core.services import grant_role
from runs.models import Annotation


@pytest.fixture
def dave(acme):
    from django.contrib.auth.models import User

    user = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
    grant_role(user, "approve", acme)
    return user


def held(acme, action_class="write", requester=None, run_id=""):
    return request_approval(acme, tool="refund_payment", action_class=action_class,
                            arguments={"amount_cents": 50000}, requester=requester,
                            run_id=run_id, requested_by=str(requester or "agent"))


def test_nobody_decides_their_own_request(acme, alice):
    request = held(acme, requester=alice)
    with pytest.raises(PermissionDenied, match="four-eyes"):
        decide_approval(request, by=alice, approve=True, justification="mine")
    request.refresh_from_db()
    assert request.status == Status.PENDING


def test_deciding_needs_the_approve_role(acme, bob):
    with pytest.raises(PermissionDenied, match="approve role"):
        decide_approval(held(acme), by=bob, approve=True)


def test_rejecting_needs_a_justification(acme, alice):
    request = held(acme)
    with pytest.raises(ApprovalError, match="justification"):
        decide_approval(request, by=alice, approve=False, justification="  ")
    decide_approval(request, by=alice, approve=False, justification="amount looks wrong")
    request.refresh_from_db()
    assert request.status == Status.REJECTED


def test_exfil_needs_two_approvers_with_justifications(acme, alice, dave):
    request = held(acme, action_class="exfil")
    with pytest.raises(ApprovalError, match="justification"):
        decide_approval(request, by=alice, approve=True)
    decide_approval(request, by=alice, approve=True, justification="partner contract 7")
    request.refresh_from_db()
    assert request.status == Status.PENDING
    with pytest.raises(ApprovalError, match="already decided"):
        decide_approval(request, by=alice, approve=True, justification="again")
    decide_approval(request, by=dave, approve=True, justification="checked the contract")
    request.refresh_from_db()
    assert request.status == Status.APPROVED


def test_every_decision_is_annotated_on_the_run(acme, alice, record, make_run):
    run = make_run()
    record(acme, run)
    request = held(acme, run_id=run["run_id"])
    decide_approval(request, by=alice, approve=True, justification="fine")
    note = Annotation.objects.get(run__run_id=run["run_id"], annotation_kind="approval")
    assert note.data["status"] == "approved"
    assert note.data["justification"] == "fine"
    assert note.author == alice


def test_an_overdue_request_expires_instead_of_being_decided(acme, alice):
    from datetime import timedelta

    from django.utils import timezone

    request = held(acme)
    type(request).objects.filter(pk=request.pk).update(due_at=timezone.now() - timedelta(1))
    request.refresh_from_db()
    with pytest.raises(ApprovalError, match="expired"):
        decide_approval(request, by=alice, approve=True, justification="late")
    request.refresh_from_db()
    assert request.status == Status.EXPIRED
