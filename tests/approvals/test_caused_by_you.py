"""Nobody approves a request they caused: not one they asked for themselves, and not one an API
key they minted asked for (a lone insider mints an agent key, has it ask, and approves)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest, Status
from approvals.services import decide_approval
from core.services import grant_role, issue_api_key
from runs.governance_log import setting_up


@pytest.fixture
def dave(acme) -> User:
    with setting_up():
        user = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
        grant_role(user, "approve", acme)
    return user


def _asked_through_a_key_minted_by(minter: User, acme) -> ApprovalRequest:
    with setting_up():
        _, raw = issue_api_key(acme, "refund-agent", ["ingest"], by=minter)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    answer = client.post("/api/v1/decisions/", {
        "run_id": "run-1", "call_id": "c1", "agent_id": "refunds", "tool": "refund_payment",
        "action_class": "write", "arguments": {"payment": "pay_77", "amount_cents": 25000}},
        format="json")
    assert answer.status_code == 201, answer.content
    assert answer.json()["effect"] == "require_approval"
    return ApprovalRequest.objects.get(pk=answer.json()["approval"]["id"])


def test_the_minter_of_the_asking_key_cannot_approve_in_the_queue(acme, alice, client):
    request = _asked_through_a_key_minted_by(alice, acme)
    client.force_login(alice)
    page = client.get("/approvals/").content.decode()
    # the queue says so before anyone tries
    assert "which you minted: someone else decides it (four-eyes)" in page
    answer = client.post(f"/approvals/{request.pk}/decide/", {
        "decision": "approve", "justification": "looks fine"}, follow=True)
    assert "four-eyes" in answer.content.decode()
    request.refresh_from_db()
    assert request.status == Status.PENDING
    assert not request.votes.exists()


def test_the_minter_cannot_approve_through_the_service_either(acme, alice):
    request = _asked_through_a_key_minted_by(alice, acme)
    with pytest.raises(PermissionDenied, match="minted"):
        decide_approval(request, by=alice, approve=True, justification="mine, via my key")


def test_someone_else_approves_what_the_key_asked(acme, alice, dave):
    request = _asked_through_a_key_minted_by(alice, acme)
    assert decide_approval(request, by=dave, approve=True).status == Status.APPROVED
