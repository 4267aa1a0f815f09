"""The decision API end to end: effects, the policy trail, approvals bound to the action."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.models import ApprovalRequest
from approvals.services import ApprovalError, decide_approval
from policies.models import Decision

URL = "/api/v1/decisions/"
RULES = [
    {"name": "reads are fine", "action_classes": ["read"], "effect": "allow"},
    {"name": "no deletes", "action_classes": ["delete"], "effect": "deny"},
    {"name": "big refunds need a person", "tool": "refund_*", "effect": "require_approval",
     "condition": "has(args.amount_cents) && args.amount_cents > 10000"},
    {"name": "exfil needs a person", "action_classes": ["exfil"], "effect": "require_approval"},
]


@pytest.fixture
def agent(acme, key_client, publish, register_tools):
    publish(RULES)
    register_tools(acme, get_customer="read", delete_record="delete", refund_payment="write",
                   send_report="exfil")
    return key_client(acme, ["ingest"])


def ask(client, tool, action_class, approval_id=None, **arguments):
    body = {"run_id": "run-1", "call_id": f"{tool}-1", "agent_id": "billing-bot", "tool": tool,
            "action_class": action_class, "arguments": arguments}
    if approval_id is not None:
        body["approval_id"] = approval_id
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_each_effect_with_its_policy_version_and_rules(agent):
    read = ask(agent, "get_customer", "read")
    assert read["effect"] == "allow"
    assert read["policy"]["name"] == "tools"
    assert [r["name"] for r in read["matched_rules"]] == ["reads are fine"]
    assert ask(agent, "delete_record", "delete")["effect"] == "deny"
    assert ask(agent, "refund_payment", "write", amount_cents=500)["effect"] == "allow"
    held = ask(agent, "refund_payment", "write", amount_cents=50000)
    assert held["effect"] == "require_approval"
    assert held["approval"]["status"] == "pending"
    assert held["approval"]["poll"].endswith(f"/approvals/{held['approval']['id']}/")


def test_every_decision_is_kept_in_the_policy_trail(agent, acme, key_client):
    ask(agent, "get_customer", "read")
    ask(agent, "delete_record", "delete")
    trail = key_client(acme, ["view_ledger"]).get("/api/v1/policy-trail/",
                                                  {"run_id": "run-1"}).json()["results"]
    assert [d["effect"] for d in trail] == ["deny", "allow"]
    assert all(d["latency_us"] >= 0 for d in trail)
    assert Decision.objects.count() == 2


def test_an_approved_call_goes_ahead_only_with_the_same_arguments(agent, alice):
    held = ask(agent, "refund_payment", "write", amount_cents=50000, payment="pay_1")
    approval = ApprovalRequest.objects.get(pk=held["approval"]["id"])
    decide_approval(approval, by=alice, approve=True, justification="customer verified")
    polled = agent.get(held["approval"]["poll"]).json()
    assert polled["status"] == "approved"
    same = ask(agent, "refund_payment", "write", approval.pk, amount_cents=50000,
               payment="pay_1")
    assert same["effect"] == "allow"
    assert "approved" in same["reason"]
    changed = ask(agent, "refund_payment", "write", approval.pk, amount_cents=90000,
                  payment="pay_1")
    assert changed["effect"] == "deny"
    assert "refused, not waved through" in changed["reason"]


def test_a_rejected_or_pending_request_does_not_let_the_call_through(agent, alice):
    held = ask(agent, "send_report", "exfil", to="partner@example.com")
    pending = ask(agent, "send_report", "exfil", held["approval"]["id"],
                  to="partner@example.com")
    assert pending["effect"] == "require_approval"
    approval = ApprovalRequest.objects.get(pk=held["approval"]["id"])
    decide_approval(approval, by=alice, approve=False, justification="not for partners")
    rejected = ask(agent, "send_report", "exfil", approval.pk, to="partner@example.com")
    assert rejected["effect"] == "deny"


def test_polling_waits_a_bounded_time(agent, settings):
    settings.LEDGER_APPROVAL_MAX_WAIT = 1
    held = ask(agent, "send_report", "exfil", to="x@example.com")
    polled = agent.get(held["approval"]["poll"], {"wait": 60}).json()
    assert polled["status"] == "pending"


def test_decisions_are_taken_under_the_keys_own_tenant(agent, globex, key_client, acme):
    outsider = key_client(globex, ["ingest"])
    decided = ask(outsider, "delete_record", "delete")
    # globex has no published policy: acme's "no deletes" rule does not apply there
    assert decided["policy"] is None
    assert decided["effect"] == "require_approval"
    assert Decision.objects.get(pk=decided["id"]).tenant == globex
    held = ApprovalRequest.objects.get(pk=decided["approval"]["id"])
    assert held.tenant == globex
    assert key_client(acme, ["ingest"]).get(
        reverse("api:approval-detail", args=[held.pk])).status_code == 404
    assert not Decision.objects.filter(tenant=acme).exists()


def test_a_key_without_the_ingest_scope_cannot_ask(acme, key_client, publish):
    publish(RULES)
    response = key_client(acme, ["view_ledger"]).post(URL, {
        "tool": "x", "action_class": "read"}, format="json")
    assert response.status_code == 403


def test_bad_input_is_a_clear_400(agent):
    response = agent.post(URL, {"tool": "x", "action_class": "teleport"}, format="json")
    assert response.status_code == 400
    assert "action_class" in response.json()
    assert not Decision.objects.exists()


def test_a_decided_request_cannot_be_decided_again(agent, alice, dave):
    held = ask(agent, "refund_payment", "write", amount_cents=50000)
    approval = ApprovalRequest.objects.get(pk=held["approval"]["id"])
    decide_approval(approval, by=alice, approve=True, justification="ok")
    with pytest.raises(ApprovalError, match="already approved"):
        decide_approval(approval, by=dave, approve=False, justification="too late")


def test_a_decision_is_linked_to_its_tool_call_when_that_arrives(agent, acme, record,
                                                                 make_run, key_client, alice,
                                                                 client):
    run = make_run()
    call = run["tool_calls"][0]
    decided = agent.post(URL, {"run_id": run["run_id"], "call_id": call["call_id"],
                               "agent_id": run["agent_id"], "tool": "delete_record",
                               "action_class": "delete", "arguments": {}},
                         format="json").json()
    record(acme, run)
    detail = key_client(acme, ["view_ledger"]).get(
        reverse("api:toolcall-detail", args=[call["call_id"]])).json()
    assert [(d["id"], d["effect"], d["policy"]) for d in detail["decisions"]] == [
        (decided["id"], "deny", "tools")]
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", run["run_id"]])).content.decode()
    assert 'class="decision decision-deny"' in page
