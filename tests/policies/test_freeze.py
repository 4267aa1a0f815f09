"""Freezing a risky tool: one action (admin or `ledger freeze`) publishes a policy version
that blocks or sandboxes it, annotated; unfreezing is the same."""

from __future__ import annotations

from django.urls import reverse

from core.cli_support import EXIT_FORBIDDEN, EXIT_OK
from ledger_portal.cli import main
from policies.services import ProposedCall, decide_tool_call, frozen_tools
from runs.models import Annotation, Tool


def decide(tenant, tool="send_email", mode="live"):
    return decide_tool_call(tenant, ProposedCall(tool=tool, action_class="read", arguments={},
                                                 mode=mode)).effect


def test_ledger_freeze_blocks_then_unfreezes_with_annotations(acme, alice, capsys):
    assert decide(acme) == "allow"
    assert main(["--as", "alice", "freeze", "send_email", "--tenant", "acme",
                 "--incident", "INC-42"]) == EXIT_OK
    assert "frozen (deny)" in capsys.readouterr().out
    assert frozen_tools(acme) == {"send_email": "deny"}
    assert decide(acme) == "deny"
    assert decide(acme, tool="get_customer") == "allow"
    notes = Annotation.objects.filter(tenant=acme, annotation_kind__in=[
        "policy_change", "incident_link"]).order_by("seq")
    assert [n.annotation_kind for n in notes] == ["policy_change", "incident_link"]
    assert notes[1].data["incident"] == "INC-42"

    assert main(["--as", "alice", "freeze", "send_email", "--tenant", "acme",
                 "--unfreeze"]) == EXIT_OK
    assert frozen_tools(acme) == {}
    assert decide(acme) == "allow"


def test_freezing_to_sandbox_lets_only_sandbox_calls_through(acme, alice):
    main(["--as", "alice", "freeze", "send_email", "--tenant", "acme", "--mode", "sandbox"])
    assert decide(acme) == "sandbox_only"


def test_freezing_needs_the_operate_role(acme, bob, capsys):
    assert main(["--as", "bob", "freeze", "send_email", "--tenant", "acme"]) == EXIT_FORBIDDEN
    assert frozen_tools(acme) == {}


def test_the_admin_action_freezes_the_selected_tools(acme, alice, record, make_run, client):
    record(acme, make_run())
    tool = Tool.objects.filter(tenant=acme)[0]
    client.force_login(alice)
    response = client.post(reverse("admin:runs_tool_changelist"),
                           {"action": "freeze", "_selected_action": [tool.pk]}, follow=True)
    assert [str(m) for m in response.context["messages"]] == [
        f"{tool.name} frozen (deny) in acme"]
    assert frozen_tools(acme) == {tool.name: "deny"}


def test_ledger_freeze_for_a_portal_incident_links_both_ways(acme, alice, capsys):
    from incidents.services import open_incident

    incident = open_incident(acme, "Mail sent to the wrong customers", by=alice)
    assert main(["--as", "alice", "freeze", "send_email", "--tenant", "acme",
                 "--incident", incident.reference]) == EXIT_OK
    [version] = incident.policy_versions.all()
    assert frozen_tools(acme) == {"send_email": "deny"}
    assert incident.reference in version.change_note
