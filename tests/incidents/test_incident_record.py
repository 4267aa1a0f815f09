"""The incident record: opened, linked to what the ledger shows, frozen from, closed with a
remediation status; every change an annotation in the incident's timeline."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from incidents.models import Incident, IncidentStatus, Remediation
from incidents.services import (
    IncidentError,
    add_note,
    close_incident,
    edit_incident,
    freeze_for_incident,
    incident_timeline,
    link_to_incident,
    mark_mitigated,
    open_incident,
)
from policies.models import PolicyVersion
from policies.services import FREEZE_POLICY, ProposedCall, decide_tool_call, frozen_tools
from runs.models import Annotation, AnnotationKind


def events(incident: Incident) -> list[str]:
    return [a.data["event"] for a in incident_timeline(incident)]


def test_an_operator_opens_an_incident_recorded_in_the_governance_log(acme, alice):
    incident = open_incident(acme, "Refunds sent twice", by=alice, severity="high",
                             ticket_ids=["JIRA-7", " JIRA-7 ", "PD-12"])
    assert incident.status == IncidentStatus.OPEN
    assert incident.remediation_status == Remediation.NONE
    assert incident.ticket_ids == ["JIRA-7", "PD-12"]
    assert incident.opened_by == alice
    (opened,) = incident_timeline(incident)
    assert opened.annotation_kind == AnnotationKind.INCIDENT_LINK
    assert opened.run.run_id == "governance"
    assert opened.data["incident"] == incident.reference
    assert opened.data["ticket_ids"] == ["JIRA-7", "PD-12"]
    assert opened.author == alice


def test_opening_or_acting_on_an_incident_needs_the_operate_role(acme, alice, bob):
    with pytest.raises(PermissionDenied):
        open_incident(acme, "Refunds sent twice", by=bob)
    incident = open_incident(acme, "Refunds sent twice", by=alice)
    with pytest.raises(PermissionDenied):
        add_note(incident, "looking", by=bob)
    with pytest.raises(PermissionDenied):
        close_incident(incident, by=bob, remediation_status=Remediation.REMEDIATED)


def test_linking_runs_calls_and_policy_versions_annotates_each_on_its_run(
        acme, alice, recorded, published_version):
    recorded(acme, "run-a", [("get_customer", "read")])
    recorded(acme, "run-b", [("get_customer", "read"), ("search_tickets", "read")])
    version = published_version
    incident = open_incident(acme, "Wrong answers", by=alice)

    linked = link_to_incident(incident, by=alice, run_ids=["run-a"], call_ids=["run-b-c2"],
                              policy_version_ids=[version.pk], ticket_ids=["JIRA-9"])

    assert (linked.runs, linked.calls, linked.policy_versions, linked.tickets) == (
        ["run-a"], ["run-b-c2"], [version.pk], ["JIRA-9"])
    assert list(incident.runs.values_list("run_id", flat=True)) == ["run-a"]
    assert list(incident.tool_calls.values_list("call_id", flat=True)) == ["run-b-c2"]
    assert list(incident.policy_versions.all()) == [version]
    incident.refresh_from_db()
    assert incident.ticket_ids == ["JIRA-9"]
    on_run_a = Annotation.objects.get(tenant=acme, run__run_id="run-a",
                                      annotation_kind="incident_link")
    assert on_run_a.data["incident"] == incident.reference
    on_call = Annotation.objects.get(tenant=acme, run__run_id="run-b",
                                     annotation_kind="incident_link")
    assert on_call.target_call_id == "run-b-c2"
    assert events(incident) == ["opened", "linked_run", "linked_call", "linked_policy_version",
                                "linked_tickets"]

    again = link_to_incident(incident, by=alice, run_ids=["run-a"], ticket_ids=["JIRA-9"])
    assert not again.anything  # linking twice adds nothing and writes nothing
    assert len(events(incident)) == 5


def test_what_is_not_in_the_incidents_tenant_cannot_be_linked(acme, globex, alice, recorded):
    recorded(globex, "globex-run", [("get_customer", "read")])
    incident = open_incident(acme, "Wrong answers", by=alice)
    with pytest.raises(IncidentError, match="no run globex-run"):
        link_to_incident(incident, by=alice, run_ids=["globex-run"])
    with pytest.raises(IncidentError, match="no tool call globex-run-c1"):
        link_to_incident(incident, by=alice, call_ids=["globex-run-c1"])
    assert not incident.runs.exists()


def test_freezing_from_an_incident_links_both_ways(acme, alice):
    incident = open_incident(acme, "Emails to the wrong customers", by=alice)

    version = freeze_for_incident(incident, "send_email", by=alice, mode="deny")

    assert frozen_tools(acme) == {"send_email": "deny"}
    assert decide_tool_call(acme, ProposedCall(tool="send_email", action_class="exfil",
                                               arguments={})).effect == "deny"
    # the incident lists the freeze ...
    assert list(incident.policy_versions.all()) == [version]
    assert version.policy.name == FREEZE_POLICY
    # ... and the freeze records the incident
    assert incident.reference in PolicyVersion.objects.get(pk=version.pk).change_note
    freeze_note = incident_timeline(incident).reverse()[0]
    assert freeze_note.data["incident"] == incident.reference
    assert freeze_note.data["version"] == version.number


def test_closing_needs_a_remediation_status(acme, alice):
    incident = open_incident(acme, "Wrong answers", by=alice)
    for missing in ("", Remediation.NONE, Remediation.IN_PROGRESS, "fixed-probably"):
        with pytest.raises(IncidentError, match="remediation status"):
            close_incident(incident, by=alice, remediation_status=missing)
    incident.refresh_from_db()
    assert incident.status == IncidentStatus.OPEN


def test_closing_writes_the_final_annotation_with_the_incidents_links(acme, alice, recorded):
    recorded(acme, "run-a", [("get_customer", "read")])
    incident = open_incident(acme, "Wrong answers", by=alice, ticket_ids=["JIRA-1"])
    link_to_incident(incident, by=alice, run_ids=["run-a"], call_ids=["run-a-c1"])
    mark_mitigated(incident, by=alice, note="prompt fixed")
    add_note(incident, "customers informed", by=alice)

    closed = close_incident(incident, by=alice, remediation_status=Remediation.REMEDIATED,
                            note="regression test added")

    assert closed.status == IncidentStatus.CLOSED
    assert closed.remediation_status == Remediation.REMEDIATED
    assert closed.closed_at is not None
    assert closed.closed_by == alice
    final = incident_timeline(incident).reverse()[0]
    assert final.data["event"] == "closed"
    assert final.data["remediation_status"] == "remediated"
    assert final.data["summary"]["runs"] == ["run-a"]
    assert final.data["summary"]["tool_calls"] == ["run-a-c1"]
    assert final.data["summary"]["ticket_ids"] == ["JIRA-1"]
    assert "regression test added" in final.body
    assert events(incident) == ["opened", "linked_run", "linked_call", "mitigated", "note",
                                "closed"]
    with pytest.raises(IncidentError, match="is closed"):
        link_to_incident(incident, by=alice, ticket_ids=["JIRA-2"])
    with pytest.raises(IncidentError, match="is closed"):
        close_incident(incident, by=alice, remediation_status=Remediation.FALSE_POSITIVE)


def test_editing_an_incident_is_annotated_with_before_and_after(acme, alice):
    incident = open_incident(acme, "Wrong answers", by=alice, severity="low")
    edit_incident(incident, by=alice, severity="critical", title="Wrong answers to customers")
    incident.refresh_from_db()
    assert (incident.severity, incident.title) == ("critical", "Wrong answers to customers")
    edited = incident_timeline(incident).reverse()[0]
    assert edited.data["before"] == {"severity": "low", "title": "Wrong answers"}
    assert edited.data["after"] == {"severity": "critical",
                                    "title": "Wrong answers to customers"}
    with pytest.raises(IncidentError, match="cannot be edited"):
        edit_incident(incident, by=alice, status="closed")


def test_a_replay_made_for_an_incident_is_linked_and_annotated_on_its_run(
        acme, globex, alice, charlie, recorded):
    from operations.replay import start_replay
    from runs.models import Run

    recorded(acme, "run-a", [("get_customer", "read")])
    recorded(globex, "globex-run", [("get_customer", "read")])
    replay = start_replay(Run.objects.get(tenant=acme, run_id="run-a"), by=alice)
    foreign = start_replay(Run.objects.get(tenant=globex, run_id="globex-run"), by=charlie)
    incident = open_incident(acme, "Wrong answers", by=alice)

    linked = link_to_incident(incident, by=alice, replay_ids=[replay.pk])

    assert linked.replays == [replay.pk]
    assert list(incident.replays.all()) == [replay]
    note = Annotation.objects.get(tenant=acme, run__run_id="run-a",
                                  annotation_kind="incident_link")
    assert note.data["replay"] == replay.pk
    assert events(incident)[-1] == "linked_replay"
    with pytest.raises(IncidentError, match=f"no replay {foreign.pk}"):
        link_to_incident(incident, by=alice, replay_ids=[foreign.pk])
    closed = close_incident(incident, by=alice, remediation_status=Remediation.REMEDIATED)
    final = incident_timeline(closed).reverse()[0]
    assert final.data["summary"]["replays"] == [{
        "replay": replay.pk, "run_id": "run-a", "mode": "sandbox", "status": replay.status,
        "divergent_steps": 0}]
