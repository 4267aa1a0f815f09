"""The queue page tells an approver, before they try, what the service would refuse: who has
voted already, no Approve/Reject for a request they caused or voted on, and a loud warning when
approving lifts a sandbox or runs a replay live."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User

from approvals.models import ApprovalRequest, Kind
from approvals.services import decide_approval, request_approval
from core.roles import Role
from core.services import grant_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(acme) -> User:
    user = User.objects.create_user("dave", is_staff=True)
    grant_role(user, Role.APPROVE, acme)
    return user


def held(acme, **kwargs) -> ApprovalRequest:
    fields = {"tool": "send_report", "action_class": "exfil", "arguments": {"to": "partner"},
              "requested_by": "agent", **kwargs}
    return request_approval(acme, **fields)


def card(page: str, request: ApprovalRequest) -> str:
    found = re.search(rf'id="request-{request.pk}">(.*?)\n  </div>', page, re.S)
    assert found, page
    return found.group(1)


def test_the_queue_names_who_voted_and_offers_no_second_vote(acme, alice, dave, client):
    request = held(acme)
    decide_approval(request, by=dave, approve=True, justification="contract 7")

    client.force_login(dave)
    mine = card(client.get("/approvals/").content.decode(), request)
    client.force_login(alice)
    theirs = card(client.get("/approvals/").content.decode(), request)

    assert "Voted: dave (approved" in mine
    assert "Voted: dave (approved" in theirs
    assert "you already voted on it" in mine
    assert 'value="approve"' not in mine
    assert 'value="approve"' in theirs
    assert "You do not decide" not in theirs


def test_the_one_who_asked_is_offered_no_buttons(acme, alice, client):
    request = held(acme, requester=alice, requested_by="alice")
    client.force_login(alice)
    shown = card(client.get("/approvals/").content.decode(), request)
    assert "you asked for it" in shown
    assert 'value="approve"' not in shown


@pytest.mark.parametrize(("kind", "warning"), [
    (Kind.LEAVE_SANDBOX, "Approving lifts the sandbox"),
    (Kind.LIVE_REPLAY, "Approving replays run run-9 live"),
])
def test_approving_that_lifts_a_safeguard_is_warned_about(acme, alice, client, kind, warning):
    request = held(acme, tool="replay", action_class="write", kind=kind, run_id="run-9")
    ordinary = held(acme, tool="lookup", action_class="read")
    client.force_login(alice)
    page = client.get("/approvals/").content.decode()
    assert warning in card(page, request)
    assert 'role="alert"' in card(page, request)
    assert "Careful" not in card(page, ordinary)


def test_the_card_shows_the_arguments_at_the_approvers_clearance(acme, alice, client):
    request = held(acme, arguments={"amount_cents": 50000,
                                    "api_token": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"})
    client.force_login(alice)
    shown = card(client.get("/approvals/").content.decode(), request)
    assert "50000" in shown
    assert "sk_live_4eC39HqLyjWDarjtT1zdp7dc" not in shown
    assert "redacted" in shown


def test_the_admin_list_links_a_pending_request_to_its_queue_card(acme, alice, client):
    pending = held(acme)
    client.force_login(alice)
    listed = client.get("/admin/approvals/approvalrequest/").content.decode()
    assert f'href="/approvals/#request-{pending.pk}"' in listed
