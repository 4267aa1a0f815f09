from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User

from core.services import grant_role
from policies.models import Policy, PolicyVersion, Rule
from policies.services import create_draft, publish_policy_version


@pytest.fixture
def dave(acme):
    """A second approver on acme (alice being the first)."""
    user = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
    for role in ("view_ledger", "approve", "manage_policies"):
        grant_role(user, role, acme)
    return user


@pytest.fixture
def olivia(acme):
    """An operator of acme: asks for exceptions, may not grant them."""
    from runs.governance_log import setting_up

    with setting_up():
        user = User.objects.create_user("olivia")
        grant_role(user, "operate", acme)
    return user


@pytest.fixture
def publish(acme, alice, dave):
    """Publish a version of acme's ``tools`` policy with the given rules (alice writes it,
    dave publishes it)."""
    def make(rules: list[dict[str, Any]], default: str = "allow") -> PolicyVersion:
        policy, _ = Policy.objects.get_or_create(tenant=acme, name="tools")
        draft = create_draft(policy, by=alice, change_note="test rules")
        draft.rules.all().delete()
        draft.default_effect = default
        draft.save()
        for position, rule in enumerate(rules):
            Rule.objects.create(tenant=acme, version=draft, position=position, **rule)
        return publish_policy_version(draft, by=dave)
    return make


@pytest.fixture
def decided(acme, key_client, publish, alice) -> dict[str, Any]:
    """A call held for a person, approved by one, and the decision that consumed it."""
    from approvals.models import ApprovalRequest, Vote
    from approvals.services import decide_approval
    from core.services import grant_role
    from policies.models import Decision

    publish([{"name": "refunds need a person", "tool": "refund_*",
              "effect": "require_approval"}])
    agent = key_client(acme, ["ingest"])
    body = {"run_id": "run-1", "call_id": "refund-1", "agent_id": "billing-bot",
            "tool": "refund_payment", "action_class": "write", "arguments": {"cents": 500}}
    held = agent.post("/api/v1/decisions/", body, format="json").json()
    grant_role(alice, "approve", acme)
    request = decide_approval(ApprovalRequest.objects.get(pk=held["approval"]["id"]), by=alice,
                              approve=True, justification="checked the charge")
    allowed = agent.post("/api/v1/decisions/", {**body, "approval_id": request.pk},
                         format="json").json()
    return {"request": ApprovalRequest.objects.get(pk=request.pk),
            "decision": Decision.objects.get(pk=allowed["id"]),
            "vote": Vote.objects.get(request=request)}
