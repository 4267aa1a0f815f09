"""Gated tools against the live decision API: every effect, the policy trail, idempotency."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from approvals.models import ApprovalRequest
from approvals.services import ApprovalError, decide_approval
from core.models import Tenant
from ledger_client import (
    ApprovalRejected,
    ApprovalTimedOut,
    DecisionUnavailable,
    LedgerClient,
    SandboxOnly,
    ToolCallDenied,
)
from policies.models import Decision
from runs.integrity import verify_tenant
from runs.models import Annotation, ToolCall

RULES = [
    {"name": "reads are fine", "action_classes": ["read"], "effect": "allow"},
    {"name": "no deletes", "action_classes": ["delete"], "effect": "deny"},
    {"name": "refunds need a person", "tool": "refund_payment", "effect": "require_approval"},
    {"name": "emails only in the sandbox", "tool": "send_email", "effect": "sandbox_only"},
]


class Tools:
    """Tools whose calls are observed: what ran, with which arguments and key."""

    def __init__(self, client: LedgerClient):
        self.calls: list[tuple[str, dict[str, Any]]] = []

        @client.gated_tool("get_customer", action_class="read")
        def get_customer(email: str, idempotency_key: str = "") -> dict[str, Any]:
            self.calls.append(("get_customer", {"email": email, "key": idempotency_key}))
            return {"email": email, "tier": "pro"}

        @client.gated_tool("delete_customer", action_class="delete")
        def delete_customer(email: str) -> None:
            self.calls.append(("delete_customer", {"email": email}))

        @client.gated_tool("refund_payment", action_class="write", approval_timeout=30)
        def refund_payment(payment: str, amount_cents: int, idempotency_key: str = "") -> str:
            self.calls.append(("refund_payment", {"payment": payment, "key": idempotency_key}))
            return f"refunded {amount_cents}"

        def preview_email(to: str, body: str, idempotency_key: str = "") -> dict[str, Any]:
            self.calls.append(("preview_email", {"to": to, "key": idempotency_key}))
            return {"would_send_to": to}

        @client.gated_tool("send_email", action_class="write", dry_run=preview_email)
        def send_email(to: str, body: str) -> dict[str, Any]:
            self.calls.append(("send_email", {"to": to}))
            return {"sent": True}

        self.get_customer = get_customer
        self.delete_customer = delete_customer
        self.refund_payment = refund_payment
        self.send_email = send_email


@pytest.fixture
def client(make_client: Any, publish: Any, register_tools: Any, acme: Any) -> LedgerClient:
    publish(RULES)
    register_tools(acme, get_customer="read", delete_customer="delete",
                   refund_payment="write", send_email="write")
    return make_client()


@pytest.fixture
def tools(client: LedgerClient) -> Tools:
    return Tools(client)


def trail(call_id: str) -> list[str]:
    return list(Decision.objects.filter(call_id=call_id).order_by("id")
                .values_list("effect", flat=True))


def error_of(call: ToolCall) -> dict[str, Any]:
    assert isinstance(call.error, dict)
    return call.error


def recorded(client: LedgerClient, run_id: str) -> list[ToolCall]:
    assert client.flush(timeout=30)
    return list(ToolCall.objects.filter(run__run_id=run_id).order_by("seq"))


def test_an_allowed_call_runs_with_an_idempotency_key_recorded_on_it(
        client: LedgerClient, tools: Tools, acme: Tenant) -> None:
    with client.run(agent_id="support-bot", goal="look up ada") as run:
        assert tools.get_customer("ada@example.com") == {"email": "ada@example.com",
                                                         "tier": "pro"}
    [(name, seen)] = tools.calls
    assert name == "get_customer"
    [call] = recorded(client, run.run_id)
    assert (call.tool.name, call.status, call.input) == (
        "get_customer", "succeeded", {"email": "ada@example.com"})
    assert call.output == {"email": "ada@example.com", "tier": "pro"}
    assert len(seen["key"]) == 32
    assert call.idempotency_key == seen["key"]
    assert trail(call.call_id) == ["allow"]
    decision = Decision.objects.get(call_id=call.call_id)
    assert (decision.run_id, decision.agent_id, decision.tool) == (
        run.run_id, "support-bot", "get_customer")
    assert verify_tenant(acme).intact


def test_each_call_gets_its_own_idempotency_key(client: LedgerClient, tools: Tools) -> None:
    with client.run(agent_id="support-bot", goal="twice"):
        tools.get_customer("ada@example.com")
        tools.get_customer("ada@example.com")
    keys = [seen["key"] for _, seen in tools.calls]
    assert len(set(keys)) == 2


def test_a_denied_call_does_not_run_and_names_the_policy_version_and_rules(
        client: LedgerClient, tools: Tools) -> None:
    with client.run(agent_id="support-bot", goal="clean up") as run, pytest.raises(
            ToolCallDenied) as denied:
        tools.delete_customer("ada@example.com")
    assert tools.calls == []
    assert denied.value.policy_version == "tools v1"
    assert [r["name"] for r in denied.value.matched_rules] == ["no deletes"]
    [call] = recorded(client, run.run_id)
    assert (call.status, call.input) == ("denied", {"email": "ada@example.com"})
    assert error_of(call)["type"] == "ToolCallDenied"
    assert denied.value.decision is not None
    assert error_of(call)["decision"] == denied.value.decision.id
    assert trail(call.call_id) == ["deny"]
    assert call.run.status == "succeeded"  # the agent handled the denial


def in_agent_thread(client: LedgerClient, work: Any) -> Future[Any]:
    def agent() -> Any:
        with client.run(agent_id="billing-bot", goal="refund") as run:
            try:
                return run.run_id, work()
            except Exception as exc:
                return run.run_id, exc
    return ThreadPoolExecutor(max_workers=1).submit(agent)


def pending_request() -> ApprovalRequest:
    for _ in range(600):  # bounded: at most ~60 s
        request = ApprovalRequest.objects.filter(status="pending").first()
        if request is not None:
            return request
        time.sleep(0.1)
    raise AssertionError("the agent never asked for approval")


def test_a_call_that_needs_approval_waits_and_runs_once_approved(
        client: LedgerClient, tools: Tools, alice: Any) -> None:
    agent = in_agent_thread(client, lambda: tools.refund_payment("pay_1", 50_000))
    request = pending_request()
    assert (request.tool, request.arguments) == (
        "refund_payment", {"payment": "pay_1", "amount_cents": 50_000})
    assert tools.calls == []
    decide_approval(request, by=alice, approve=True, justification="customer verified")
    run_id, result = agent.result(timeout=60)
    assert result == "refunded 50000"
    [call] = recorded(client, run_id)
    assert call.status == "succeeded"
    assert call.call_id == request.call_id
    assert call.idempotency_key == tools.calls[0][1]["key"]
    assert trail(call.call_id) == ["require_approval", "allow"]


def test_a_rejected_approval_raises_and_the_call_never_runs(
        client: LedgerClient, tools: Tools, alice: Any) -> None:
    agent = in_agent_thread(client, lambda: tools.refund_payment("pay_2", 90_000))
    request = pending_request()
    decide_approval(request, by=alice, approve=False, justification="not this customer")
    run_id, raised = agent.result(timeout=60)
    assert isinstance(raised, ApprovalRejected)
    assert raised.approval_id == request.pk
    assert tools.calls == []
    [call] = recorded(client, run_id)
    assert (call.status, error_of(call)["type"]) == ("denied", "ApprovalRejected")
    assert trail(call.call_id) == ["require_approval"]


def test_an_approval_nobody_decides_in_time_times_out_and_is_withdrawn(
        client: LedgerClient, tools: Tools, alice: Any) -> None:
    with client.run(agent_id="billing-bot", goal="refund") as run:
        with pytest.raises(ApprovalTimedOut) as timed_out:
            run.call_tool("refund_payment", tools.refund_payment.__wrapped__,  # type: ignore[attr-defined]
                          action_class="write", arguments={"payment": "pay_3",
                                                           "amount_cents": 100},
                          approval_timeout=0.5)
        run.end("cancelled")
    assert tools.calls == []
    withdrawn = ApprovalRequest.objects.get(pk=timed_out.value.approval_id)
    assert withdrawn.status == "expired"  # nobody can approve what the agent gave up on
    with pytest.raises(ApprovalError, match="already expired"):
        decide_approval(withdrawn, by=alice, approve=True, justification="too late")
    [call] = recorded(client, run.run_id)
    assert (call.status, error_of(call)["type"]) == ("cancelled", "ApprovalTimedOut")
    assert trail(call.call_id) == ["require_approval"]


def test_a_sandbox_only_call_runs_its_dry_run_instead(client: LedgerClient,
                                                       tools: Tools) -> None:
    with client.run(agent_id="support-bot", goal="email ada") as run:
        assert tools.send_email("ada@example.com", "hello") == {
            "would_send_to": "ada@example.com"}

        @client.gated_tool("send_email", action_class="write")  # and no dry run
        def send_email_live_only(to: str) -> None:
            tools.calls.append(("live", {"to": to}))

        with pytest.raises(SandboxOnly):
            send_email_live_only("bob@example.com")
    assert [name for name, _ in tools.calls] == ["preview_email"]
    first, refused = recorded(client, run.run_id)
    assert (first.status, first.output) == ("succeeded", {"would_send_to": "ada@example.com"})
    assert first.idempotency_key == tools.calls[0][1]["key"]
    assert trail(first.call_id) == ["sandbox_only"]
    note = Annotation.objects.get(run__run_id=run.run_id, annotation_kind="note")
    assert note.target_call_id == first.call_id
    assert (refused.status, error_of(refused)["type"]) == ("denied", "SandboxOnly")


def test_the_low_level_gate_clears_a_call_the_agent_records_itself(
        client: LedgerClient) -> None:
    with client.run(agent_id="support-bot", goal="read") as run:
        clearance = client.gate("get_customer", action_class="read",
                                arguments={"email": "ada@example.com"})
        assert (clearance.decision.effect, clearance.sandbox) == ("allow", False)
        with run.tool_call("get_customer", action_class="read",
                           input={"email": "ada@example.com"}, call_id=clearance.call_id,
                           idempotency_key=clearance.idempotency_key) as call:
            call.output = {"tier": "pro"}
        with pytest.raises(ToolCallDenied):
            run.gate("delete_customer", action_class="delete")
    [stored] = recorded(client, run.run_id)
    assert stored.idempotency_key == clearance.idempotency_key
    assert trail(stored.call_id) == ["allow"]


def test_gating_fails_closed_when_the_portal_cannot_be_asked(
        make_client: Any, proxy: Any, publish: Any) -> None:
    publish(RULES)
    client = make_client(proxy.url, decision_timeout=0.3)  # the proxy is down
    tools = Tools(client)
    with client.run(agent_id="support-bot", goal="read while the portal is down") as run:
        with pytest.raises(DecisionUnavailable):
            tools.get_customer("ada@example.com")
        run.end("failed")
    assert tools.calls == []
    assert not Decision.objects.exists()
    proxy.up()
    [call] = recorded(client, run.run_id)
    assert (call.status, error_of(call)["type"]) == ("cancelled", "DecisionUnavailable")


def test_a_sandbox_only_call_inside_a_step_does_not_make_the_portal_refuse_the_step(
        client: LedgerClient, tools: Tools) -> None:
    with (client.run(agent_id="support-bot", goal="email ada in a step") as run,
          run.step("write to the customer") as step):
        tools.send_email("ada@example.com", "hello")
    [call] = recorded(client, run.run_id)
    assert client.stats().rejected == 0
    assert call.step is not None
    assert call.step.step_id == step.step_id
    note = Annotation.objects.get(run__run_id=run.run_id, annotation_kind="note")
    assert (note.target_call_id, note.data["step_id"]) == (call.call_id, step.step_id)
