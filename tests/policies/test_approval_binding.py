"""An approval clears exactly one call: the one it was asked for (tenant, run, call, agent, the
asking key, tool, canonical arguments and the policy version in force), once, and only while
the request is alive. The decision names the approval it consumed and the approval names the
decision that consumed it, on every face."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.utils import timezone

from approvals.models import ApprovalRequest, Status
from approvals.services import ApprovalError, decide_approval

URL = "/api/v1/decisions/"
RULES = [{"name": "refunds need a person", "tool": "refund_*", "effect": "require_approval"}]
REFUND = {"payment": "pay_77", "amount_cents": 25000}


@pytest.fixture
def agent(acme, key_client, publish):
    publish(RULES)
    return key_client(acme, ["ingest"])


def ask(client, approval_id=None, *, run_id="run-1", call_id="refund-1", agent_id="billing-bot",
        tool="refund_payment", arguments=None):
    body = {"run_id": run_id, "call_id": call_id, "agent_id": agent_id, "tool": tool,
            "action_class": "write", "arguments": REFUND if arguments is None else arguments}
    if approval_id is not None:
        body["approval_id"] = approval_id
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.fixture
def approved(agent, alice):
    held = ask(agent)
    approval = ApprovalRequest.objects.get(pk=held["approval"]["id"])
    decide_approval(approval, by=alice, approve=True, justification="customer verified")
    return approval.pk


def test_an_approval_clears_exactly_one_call(agent, approved):
    first = ask(agent, approved)
    assert first["effect"] == "allow"
    again = ask(agent, approved)
    assert again["effect"] == "deny"
    assert f"already used by decision {first['id']}" in again["reason"]


@pytest.mark.parametrize(("field", "value"), [
    ("run_id", "run-2"), ("call_id", "refund-2"), ("agent_id", "other-bot"),
    ("tool", "refund_order"), ("arguments", {"payment": "pay_77", "amount_cents": 25001}),
])
def test_an_approval_does_not_clear_a_call_that_differs_in_anything(agent, approved, field,
                                                                    value):
    differs = ask(agent, approved, **{field: value})
    assert differs["effect"] == "deny"
    assert f"({field})" in differs["reason"]
    assert ask(agent, approved)["effect"] == "allow"  # the bound call still may, once


def test_another_key_of_the_tenant_cannot_use_it(acme, approved, key_client):
    other = key_client(acme, ["ingest"])
    assert ask(other, approved)["effect"] == "deny"


def test_a_newly_published_policy_version_voids_the_approval(agent, approved, publish):
    publish(RULES)  # the same rules, a new version: what was approved was asked under v1
    voided = ask(agent, approved)
    assert voided["effect"] == "deny"
    assert "policy version" in voided["reason"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_decisions_presenting_one_approval_clear_exactly_one(
        acme, alice, dave, key_client, publish):
    publish(RULES)
    agent = key_client(acme, ["ingest"])
    for _ in range(5):
        held = ask(agent)
        decide_approval(ApprovalRequest(pk=held["approval"]["id"]), by=alice, approve=True,
                        justification="verified")
        effects: list[str] = []
        barrier = threading.Barrier(3)

        def use(approval_id=held["approval"]["id"], effects=effects, barrier=barrier):
            try:
                barrier.wait(timeout=10)
                effects.append(ask(agent, approval_id)["effect"])
            finally:
                connection.close()

        threads = [threading.Thread(target=use) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(effects) == ["allow", "deny", "deny"]
        approval = ApprovalRequest.objects.select_related("consumed_by").get(
            pk=held["approval"]["id"])
        assert approval.consumed_by is not None
        assert approval.consumed_by.effect == "allow"


def test_an_overdue_request_can_no_longer_be_approved_anywhere(agent, alice, client):
    held = ask(agent)
    ApprovalRequest.objects.filter(pk=held["approval"]["id"]).update(
        due_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(ApprovalError, match="expired"):
        decide_approval(ApprovalRequest.objects.get(pk=held["approval"]["id"]), by=alice,
                        approve=True, justification="late")
    assert ApprovalRequest.objects.get(pk=held["approval"]["id"]).status == Status.EXPIRED
    assert ask(agent, held["approval"]["id"])["effect"] == "deny"


def test_a_request_the_agent_gave_up_on_is_withdrawn_and_cannot_be_approved(agent, alice):
    held = ask(agent)
    response = agent.post(f"/api/v1/approvals/{held['approval']['id']}/withdraw/",
                          {"reason": "timed out waiting"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "expired"
    with pytest.raises(ApprovalError, match="already expired"):
        decide_approval(ApprovalRequest.objects.get(pk=held["approval"]["id"]), by=alice,
                        approve=True, justification="too late")


def test_only_the_asking_key_may_withdraw(agent, acme, globex, key_client):
    held = ask(agent)
    url = f"/api/v1/approvals/{held['approval']['id']}/withdraw/"
    other = key_client(acme, ["ingest"])
    assert other.post(url, {}, format="json").status_code == 403
    assert key_client(globex, ["ingest"]).post(url, {}, format="json").status_code == 404
    assert ApprovalRequest.objects.get(pk=held["approval"]["id"]).status == Status.PENDING


def test_the_decision_names_the_approval_and_the_approval_its_decision(agent, approved, alice,
                                                                       acme, key_client,
                                                                       client):
    used = ask(agent, approved)
    assert used["approval"] == {"id": approved, "status": "approved", "consumed": True,
                                "poll": f"/api/v1/approvals/{approved}/"}
    polled = agent.get(f"/api/v1/approvals/{approved}/").json()
    assert polled["consumed_by"] == {"decision": used["id"], "run_id": "run-1",
                                     "call_id": "refund-1"}
    assert polled["consumed_at"]
    client.force_login(alice)
    change = client.get(f"/admin/approvals/approvalrequest/{approved}/change/")
    assert f"decision {used['id']}" in change.content.decode()
    queue = client.get("/approvals/").content.decode()
    assert f"used by decision {used['id']}" in queue


def test_without_a_person_nobody_approves(agent, bob):
    held = ask(agent)
    with pytest.raises(PermissionDenied):
        decide_approval(ApprovalRequest.objects.get(pk=held["approval"]["id"]), by=bob,
                        approve=True, justification="not mine to decide")
