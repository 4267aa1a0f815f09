"""The portal decides from what it knows, not from what the agent claims: a tool's class comes
from the tenant's registry (the stricter of it and the declared one wins, and both are on the
record), an unregistered tool is held for a person unless it is declared a read, a freeze only
ever tightens, and an approval never widens a sandbox into a live call."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest
from approvals.services import decide_approval
from core.cli_support import EXIT_OK
from ledger_portal.cli import main
from policies.services import ProposedCall, decide_tool_call, freeze_tool
from runs.models import Tool

from .test_decision_api import ask

RULES = [
    {"name": "reads are fine", "action_classes": ["read"], "effect": "allow"},
    {"name": "writes need a person", "action_classes": ["write"], "effect": "require_approval"},
    {"name": "no deletes", "action_classes": ["delete"], "effect": "deny"},
]


@pytest.fixture
def agent(acme, key_client, publish):
    publish(RULES)
    for name, action_class in (("delete_record", "delete"), ("refund_payment", "write"),
                               ("get_customer", "read")):
        Tool.objects.create(tenant=acme, name=name, action_class=action_class)
    return key_client(acme, ["ingest"])


def test_a_registered_tool_is_decided_by_its_registered_class(agent):
    lied = ask(agent, "delete_record", "read")
    assert lied["effect"] == "deny"
    assert lied["action_class"] == "delete"
    assert lied["declared_action_class"] == "read"
    assert "registered as delete" in lied["reason"]


def test_a_declared_class_stricter_than_the_registry_stands(agent):
    stricter = ask(agent, "get_customer", "delete")
    assert (stricter["action_class"], stricter["effect"]) == ("delete", "deny")


def test_an_unregistered_tool_not_declared_read_waits_for_a_person(acme, agent, publish):
    publish([{"name": "anything goes", "effect": "allow"}])
    assert ask(agent, "wire_money", "write")["effect"] == "require_approval"
    assert ask(agent, "look_up_rates", "read")["effect"] == "allow"
    assert ask(agent, "refund_payment", "write")["effect"] == "allow"  # registered


def test_a_tenant_may_choose_to_trust_declared_classes(acme, agent, publish):
    publish([{"name": "anything goes", "effect": "allow"}])
    acme.unregistered_tools = "trust_declared"
    acme.save()
    assert ask(agent, "wire_money", "write")["effect"] == "allow"


def test_a_freeze_never_loosens_another_policy(acme, agent, alice, capsys):
    assert ask(agent, "refund_payment", "write")["effect"] == "require_approval"
    assert main(["--as", "alice", "freeze", "drop_table", "--tenant", "acme"]) == EXIT_OK
    capsys.readouterr()
    assert ask(agent, "refund_payment", "write")["effect"] == "require_approval"
    assert ask(agent, "delete_record", "delete")["effect"] == "deny"
    assert ask(agent, "drop_table", "read")["effect"] == "deny"
    assert ask(agent, "get_customer", "read")["effect"] == "allow"


def test_a_freeze_alone_leaves_unfrozen_calls_to_the_baseline(globex, charlie):
    freeze_tool(globex, "drop_table", by=charlie)
    write = decide_tool_call(globex, ProposedCall(tool="x", action_class="write",
                                                  arguments={}))
    assert write.effect == "require_approval"


def test_an_approval_never_widens_a_sandbox_freeze(acme, agent, alice, dave):
    freeze_tool(acme, "refund_payment", by=dave, mode="sandbox")
    held = ask(agent, "refund_payment", "write", payment="pay_1")
    assert held["effect"] == "require_approval"
    decide_approval(ApprovalRequest.objects.get(pk=held["approval"]["id"]), by=alice,
                    approve=True, justification="verified")
    cleared = ask(agent, "refund_payment", "write", held["approval"]["id"], payment="pay_1")
    assert cleared["effect"] == "sandbox_only"
    assert "sandbox" in cleared["reason"]


def test_a_freeze_published_before_the_upgrade_does_not_loosen_either(globex, charlie):
    from policies.models import Policy, PolicyVersion, Rule
    from policies.services import FREEZE_POLICY, publish_policy_version

    policy = Policy.objects.create(tenant=globex, name=FREEZE_POLICY)
    old = PolicyVersion.objects.create(tenant=globex, policy=policy, number=1,
                                       default_effect="allow", change_note="freeze (old)")
    Rule.objects.create(tenant=globex, version=old, position=0, name="freeze drop_table",
                        tool="drop_table", effect="deny")
    publish_policy_version(old, by=charlie)
    write = decide_tool_call(globex, ProposedCall(tool="x", action_class="write",
                                                  arguments={}))
    assert write.effect == "require_approval"
