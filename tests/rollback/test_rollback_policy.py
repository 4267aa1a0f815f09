"""A rollback is a side effect: its compensation passes the policy engine like any call (mode
``rollback``), through every entry point. A denial stops it before the hook is called; a
required approval opens a request bound to the rollback and to who asked, which someone else
approves before asking again lets it go ahead. Every decision stays on the policy trail."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from approvals.models import ApprovalRequest, Status
from approvals.services import decide_approval
from core.services import grant_role
from ledger_portal.cli import main
from operations.models import Rollback
from operations.rollback import (
    RollbackRefused,
    request_rollback,
    request_run_rollback,
    rollback_key,
)
from policies.models import Decision, Policy, Rule
from policies.services import create_draft, publish_policy_version
from runs.governance_log import setting_up
from runs.models import Tool, ToolCall

pytestmark = pytest.mark.usefixtures("eager")


@pytest.fixture
def dana(acme) -> User:
    with setting_up():
        user = User.objects.create_user("dana", password="pw-for-tests-only", is_staff=True)
        for role in ("approve", "manage_policies"):
            grant_role(user, role, acme)
    return user


@pytest.fixture
def rollbacks_are(acme, alice, dana):
    """Publish a policy whose effect on rollbacks of refund_payment is ``effect`` (everything
    else allowed)."""
    def publish(effect: str) -> None:
        policy = Policy.objects.create(tenant=acme, name="rollbacks")
        draft = create_draft(policy, by=alice, change_note=f"rollbacks: {effect}")
        Rule.objects.create(tenant=acme, version=draft, name="compensations",
                            tool="refund_payment", modes=["rollback"], effect=effect)
        publish_policy_version(draft, by=dana)
    return publish


@pytest.fixture
def refund_tool(acme, refunds, compensating) -> Tool:
    return compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                        (200, {"refund_reversed": True}))


def call(call_id: str) -> ToolCall:
    return ToolCall.objects.select_related("tool").get(call_id=call_id)


def hook_calls(tool_server) -> int:
    return len(tool_server.requests_to("/refund_payment/compensate"))


def test_a_denied_rollback_never_reaches_the_hook_and_is_on_the_trail(
        acme, alice, rollbacks_are, refund_tool, tool_server,
        django_capture_on_commit_callbacks):
    rollbacks_are("deny")
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(
            RollbackRefused, match="does not let"):
        request_rollback(call("run-refunds-c2"), by=alice)
    assert hook_calls(tool_server) == 0
    assert not Rollback.objects.exists()
    decision = Decision.objects.get(call_id=rollback_key(call("run-refunds-c2")))
    assert (decision.mode, decision.effect, decision.tool, decision.run_id) == (
        "rollback", "deny", "refund_payment", "run-refunds")


@pytest.mark.parametrize("entry_point", ["api", "cli", "timeline", "admin"])
def test_every_entry_point_is_refused_when_the_policy_denies(
        acme, alice, rollbacks_are, refund_tool, tool_server, key_client, client, entry_point,
        django_capture_on_commit_callbacks):
    rollbacks_are("deny")
    target = call("run-refunds-c2")
    with django_capture_on_commit_callbacks(execute=True):
        if entry_point == "api":
            answer = key_client(acme, ["view_ledger", "operate"]).post(
                reverse("api:rollback-list"), {"call_id": target.call_id}, format="json")
            assert answer.status_code == 400
            assert "does not let" in answer.json()["detail"]
        elif entry_point == "cli":
            assert main(["--as", "alice", "rollback", "--call-id", target.call_id]) != 0
        elif entry_point == "timeline":
            client.force_login(alice)
            page = client.post(reverse("run-rollback", args=[acme.slug, "run-refunds"]),
                               {"call_id": target.call_id}, follow=True)
            assert "does not let" in page.content.decode()
        else:
            client.force_login(alice)
            page = client.post(reverse("admin:runs_toolcall_changelist"), {
                "action": "roll_back", "_selected_action": [target.pk]}, follow=True)
            assert "does not let" in page.content.decode()
    assert hook_calls(tool_server) == 0
    assert not Rollback.objects.exists()


def test_a_required_approval_is_asked_once_and_cleared_by_someone_else(
        acme, alice, dana, rollbacks_are, refund_tool, tool_server,
        django_capture_on_commit_callbacks):
    rollbacks_are("require_approval")
    target = call("run-refunds-c2")
    with pytest.raises(RollbackRefused, match="requires approval"):
        request_rollback(target, by=alice)
    (request,) = ApprovalRequest.objects.filter(call_id=rollback_key(target))
    assert (request.requester, request.tool, request.status) == (alice, "refund_payment",
                                                                 Status.PENDING)
    with pytest.raises(RollbackRefused, match=f"waits for approval request {request.pk}"):
        request_rollback(target, by=alice)  # asking again opens no second request
    assert ApprovalRequest.objects.filter(call_id=rollback_key(target)).count() == 1
    with pytest.raises(PermissionDenied, match="four-eyes"):
        decide_approval(request, by=alice, approve=True, justification="mine")
    decide_approval(request, by=dana, approve=True, justification="INC-7: reverse it")

    with django_capture_on_commit_callbacks(execute=True):
        rollback, queued = request_rollback(target, by=alice)
    assert queued
    rollback.refresh_from_db()
    assert rollback.status == "succeeded"
    assert hook_calls(tool_server) == 1
    assert rollback.decision is not None
    assert (rollback.decision.effect, rollback.decision.approval_id) == ("allow", request.pk)
    request.refresh_from_db()
    assert request.consumed_by_id == rollback.decision_id


def test_an_approval_asked_by_one_operator_does_not_clear_another(
        acme, alice, dana, rollbacks_are, refund_tool, tool_server):
    rollbacks_are("require_approval")
    target = call("run-refunds-c2")
    with pytest.raises(RollbackRefused):
        request_rollback(target, by=alice)
    request = ApprovalRequest.objects.get(call_id=rollback_key(target))
    decide_approval(request, by=dana, approve=True, justification="for alice")
    with setting_up():
        grant_role(dana, "operate", acme)
    with pytest.raises(RollbackRefused, match="requires approval"):
        request_rollback(target, by=dana)
    assert hook_calls(tool_server) == 0


def test_a_whole_run_waits_until_every_compensation_is_cleared(
        acme, alice, dana, rollbacks_are, refund_tool, tool_server,
        django_capture_on_commit_callbacks):
    rollbacks_are("require_approval")
    run_rollback: Any = lambda: request_run_rollback(  # noqa: E731
        call("run-refunds-c2").run, by=alice)
    with pytest.raises(RollbackRefused, match="nothing of run run-refunds was queued"):
        run_rollback()
    assert not Rollback.objects.exists()
    requests = list(ApprovalRequest.objects.filter(status=Status.PENDING))
    assert len(requests) == 3  # one per refund to compensate
    decide_approval(requests[0], by=dana, approve=True, justification="INC-7")
    with pytest.raises(RollbackRefused, match="nothing of run"):
        run_rollback()
    requests[0].refresh_from_db()
    assert requests[0].consumed_by_id is None  # a held run consumes nobody's approval
    for request in requests[1:]:
        decide_approval(request, by=dana, approve=True, justification="INC-7")
    with django_capture_on_commit_callbacks(execute=True):
        rollbacks = run_rollback()
    assert len(rollbacks) == 3
    assert set(Rollback.objects.values_list("decision__effect", flat=True)) == {"allow"}
    assert hook_calls(tool_server) == 3


def test_an_agent_cannot_declare_the_rollback_mode(acme, key_client):
    answer = key_client(acme, ["ingest"]).post("/api/v1/decisions/", {
        "tool": "refund_payment", "action_class": "write", "mode": "rollback"}, format="json")
    assert answer.status_code == 400
