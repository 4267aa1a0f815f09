"""Approvers work the queue from the API too: ``GET /api/v1/approvals/`` lists what they may
decide, ``POST /api/v1/approvals/<id>/decision/`` decides, through the same service and the
same four-eyes rules as the queue page. A person signs in or sends a personal access token;
an agent's API key reads its own requests and never decides one."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from approvals.models import ApprovalRequest, Status
from approvals.services import request_approval
from core.access_tokens import issue_personal_token
from core.models import Tenant
from core.roles import Role
from core.services import grant_role
from runs.models import Annotation

pytestmark = pytest.mark.django_db


def held(tenant: Tenant, action_class: str = "write", requester: Any = None,
         tool: str = "refund_payment") -> ApprovalRequest:
    return request_approval(tenant, tool=tool, action_class=action_class,
                            arguments={"amount_cents": 50000}, requester=requester,
                            requested_by=str(requester or "agent"))


@pytest.fixture
def dave(acme: Tenant) -> User:
    user = User.objects.create_user("dave", is_staff=True)
    grant_role(user, Role.APPROVE, acme)
    return user


def token_client(user: User, scopes: list[str]) -> APIClient:
    _, raw = issue_personal_token(user, "phone", scopes, by=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def decide(client: APIClient, request: ApprovalRequest, decision: str,
           justification: str = "") -> Any:
    return client.post(f"/api/v1/approvals/{request.pk}/decision/",
                       {"decision": decision, "justification": justification}, format="json")


# -- listing -------------------------------------------------------------------------------


def test_an_approver_lists_the_pending_requests_of_their_tenants_only(
        acme, globex, alice, user_client):
    mine, theirs = held(acme), held(globex)
    decided = held(acme, tool="other")
    ApprovalRequest.objects.filter(pk=decided.pk).update(status=Status.REJECTED)

    listed = user_client(alice).get("/api/v1/approvals/?status=pending")

    assert listed.status_code == 200
    assert [row["id"] for row in listed.json()["results"]] == [mine.pk]
    assert theirs.pk not in [row["id"] for row in
                             user_client(alice).get("/api/v1/approvals/").json()["results"]]


def test_the_list_says_who_voted_and_whether_you_may_decide(acme, alice, dave, user_client):
    exfil = held(acme, action_class="exfil")
    assert decide(user_client(dave), exfil, "approve", "contract 7").status_code == 200
    own = held(acme, requester=alice)

    rows = {row["id"]: row for row in
            user_client(alice).get("/api/v1/approvals/?status=pending").json()["results"]}

    assert rows[exfil.pk]["voters"] == ["dave"]
    assert rows[exfil.pk]["approvals"] == 1
    assert rows[exfil.pk]["approvals_needed"] == 2
    assert rows[exfil.pk]["you_may_decide"] is True
    assert rows[own.pk]["you_may_decide"] is False
    assert "you asked for it" in rows[own.pk]["why_not"]


def test_someone_without_the_approve_role_lists_nothing(acme, bob, user_client):
    held(acme)
    assert user_client(bob).get("/api/v1/approvals/").json()["results"] == []


def test_the_list_shows_arguments_as_the_approvers_clearance_allows(acme, user_client):
    viewer = User.objects.create_user("viewer", is_staff=True)
    grant_role(viewer, Role.APPROVE, acme)
    request_approval(acme, tool="email", action_class="write",
                     arguments={"to": "jane.doe@example.com"}, requested_by="agent")

    row = user_client(viewer).get("/api/v1/approvals/").json()["results"][0]

    assert "jane.doe@example.com" not in str(row)


# -- deciding ------------------------------------------------------------------------------


def test_an_approver_approves_and_the_decision_is_annotated(acme, alice, user_client):
    request = held(acme)

    answer = decide(user_client(alice), request, "approve", "looks right")

    assert answer.status_code == 200, answer.json()
    assert answer.json()["status"] == Status.APPROVED
    note = Annotation.objects.get(annotation_kind="approval")
    assert note.author == alice
    assert note.data["justification"] == "looks right"


def test_rejecting_without_a_justification_is_refused_and_nothing_changes(
        acme, alice, user_client):
    request = held(acme)

    answer = decide(user_client(alice), request, "reject", "  ")

    assert answer.status_code == 400
    assert "justification" in answer.json()["detail"]
    request.refresh_from_db()
    assert request.status == Status.PENDING
    assert not Annotation.objects.filter(annotation_kind="approval").exists()


def test_nobody_decides_a_request_they_caused(acme, alice, user_client):
    request = held(acme, requester=alice)

    answer = decide(user_client(alice), request, "approve", "mine")

    assert answer.status_code == 403
    assert "four-eyes" in answer.json()["detail"]
    request.refresh_from_db()
    assert request.status == Status.PENDING


def test_an_exfil_request_needs_two_people_and_one_cannot_vote_twice(
        acme, alice, dave, user_client):
    request = held(acme, action_class="exfil")
    assert decide(user_client(alice), request, "approve", "contract 7").json()["status"] == \
        Status.PENDING
    again = decide(user_client(alice), request, "approve", "really")
    assert again.status_code == 400
    assert "already decided" in again.json()["detail"]
    assert decide(user_client(dave), request, "approve", "checked").json()["status"] == \
        Status.APPROVED


def test_an_agents_api_key_never_decides(acme, api_key):
    request = held(acme)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key(acme, ['ingest', 'approve'])}")

    answer = decide(client, request, "approve", "the agent approves itself")

    assert answer.status_code == 403
    request.refresh_from_db()
    assert request.status == Status.PENDING


def test_another_tenants_request_is_not_found(acme, globex, charlie, user_client):
    request = held(acme)
    assert decide(user_client(charlie), request, "approve", "x").status_code == 404
    assert user_client(charlie).get(f"/api/v1/approvals/{request.pk}/").status_code == 404


def test_a_decided_request_is_not_decided_again(acme, alice, dave, user_client):
    request = held(acme)
    decide(user_client(alice), request, "reject", "no")
    answer = decide(user_client(dave), request, "approve", "yes")
    assert answer.status_code == 400
    assert "already rejected" in answer.json()["detail"]


def test_an_unknown_decision_is_a_bad_request(acme, alice, user_client):
    answer = decide(user_client(alice), held(acme), "maybe")
    assert answer.status_code == 400
    assert "decision" in answer.json()


# -- personal access tokens ----------------------------------------------------------------


def test_a_person_decides_with_a_personal_access_token_and_is_named_with_it(acme, alice):
    request = held(acme)

    answer = decide(token_client(alice, [Role.APPROVE]), request, "approve", "from my phone")

    assert answer.status_code == 200, answer.json()
    note = Annotation.objects.get(annotation_kind="approval")
    assert note.author == alice
    assert note.author_label.startswith("alice via token lpt_")


def test_a_token_without_the_approve_scope_does_not_decide(acme, alice):
    request = held(acme)
    client = token_client(alice, [Role.VIEW_LEDGER])
    assert client.get("/api/v1/approvals/").json()["results"] == []
    assert decide(client, request, "approve", "x").status_code == 404


def test_a_revoked_token_is_refused(acme, alice):
    from core.access_tokens import revoke_personal_token
    from core.models import PersonalAccessToken

    client = token_client(alice, [Role.APPROVE])
    revoke_personal_token(PersonalAccessToken.objects.get(user=alice), by=alice)
    assert client.get("/api/v1/approvals/").status_code == 401


def test_a_token_is_not_a_way_into_other_apis_as_an_agent(acme, alice, make_run):
    """A person's token acts as the person, within its scopes: recording runs needs ingest."""
    client = token_client(alice, [Role.APPROVE])
    answer = client.post("/api/v1/batches/?tenant=acme", {"runs": [make_run()]}, format="json")
    assert answer.status_code in (403, 404)
