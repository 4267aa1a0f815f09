"""The incident API: open, list, read, link, note, freeze, close; tenant-bound."""

from __future__ import annotations

import pytest
from django.urls import reverse

from incidents.models import Incident
from incidents.services import open_incident

OPERATOR_SCOPES = ["view_ledger", "operate"]


def url(name, incident=None):
    return reverse(f"api:incident-{name}", kwargs={"incident_id": incident.pk}
                   if incident else {})


def test_an_agent_key_opens_links_and_closes_an_incident(acme, recorded, key_client):
    recorded(acme, "run-a", [("get_customer", "read")])
    client = key_client(acme, OPERATOR_SCOPES)

    opened = client.post(url("list"), {"title": "Wrong answers", "severity": "high",
                                       "ticket_ids": ["PD-1"]}, format="json")
    assert opened.status_code == 201, opened.content
    incident = Incident.objects.get(pk=opened.json()["id"])
    assert (incident.tenant, incident.severity, incident.ticket_ids) == (acme, "high", ["PD-1"])

    linked = client.post(url("link", incident), {"run_ids": ["run-a"],
                                                 "call_ids": ["run-a-c1"]}, format="json")
    assert linked.json() == {"runs": ["run-a"], "calls": ["run-a-c1"], "policy_versions": [],
                             "replays": [], "tickets": [], "escalated_calls": []}
    assert client.post(url("note", incident), {"body": "looking"},
                       format="json").status_code == 200

    refused = client.post(url("close", incident), {}, format="json")
    assert refused.status_code == 400
    assert "remediation_status" in refused.json()
    closed = client.post(url("close", incident), {"remediation_status": "false_positive"},
                         format="json")
    assert closed.json()["status"] == "closed"

    detail = client.get(url("detail", incident)).json()
    assert detail["runs"] == ["run-a"]
    assert detail["tool_calls"][0]["call_id"] == "run-a-c1"
    assert [e["event"] for e in detail["timeline"]] == [
        "opened", "linked_run", "linked_call", "note", "closed"]
    assert detail["remediation_status"] == "false_positive"
    listed = client.get(url("list"), {"status": "closed"}).json()["results"]
    assert [row["id"] for row in listed] == [incident.pk]


def test_freezing_through_the_api_lists_the_freeze_on_the_incident(acme, alice, user_client):
    incident = open_incident(acme, "Mails to strangers", by=alice)
    response = user_client(alice).post(url("freeze", incident), {"tool": "send_email",
                                                                 "mode": "sandbox"},
                                       format="json")
    assert response.status_code == 200, response.content
    detail = user_client(alice).get(url("detail", incident)).json()
    assert detail["policy_versions"] == [{**response.json(), "status": "published"}]
    assert detail["policy_versions"][0]["freeze"] is True


def test_acting_needs_the_operate_role(acme, alice, bob, key_client, user_client):
    incident = open_incident(acme, "Wrong answers", by=alice)
    reader = key_client(acme, ["view_ledger"])
    assert reader.get(url("detail", incident)).status_code == 200
    assert reader.post(url("note", incident), {"body": "x"}, format="json").status_code == 403
    assert reader.post(url("list"), {"title": "x"}, format="json").status_code == 403
    # a person names the tenant they open the incident in
    assert user_client(alice).post(url("list"), {"title": "x"},
                                   format="json").status_code == 403
    assert user_client(alice).post(url("list") + "?tenant=acme", {"title": "x"},
                                   format="json").status_code == 201


@pytest.mark.parametrize("action", ["link", "note", "freeze", "mitigate", "close"])
def test_nobody_acts_on_another_tenants_incident(action, acme, alice, charlie, globex,
                                                 user_client, key_client):
    incident = open_incident(acme, "acme only", by=alice)
    body = {"link": {"ticket_ids": ["X-1"]}, "note": {"body": "x"},
            "freeze": {"tool": "send_email"}, "mitigate": {},
            "close": {"remediation_status": "remediated"}}[action]
    for outsider in (user_client(charlie), key_client(globex, ["view_ledger", "operate"])):
        response = outsider.post(url(action, incident), body, format="json")
        assert response.status_code == 404, (action, response.status_code)
    incident.refresh_from_db()
    assert (incident.status, incident.ticket_ids) == ("open", [])
    assert not incident.policy_versions.exists()


def test_ledger_incident_open_link_close_show(acme, alice, recorded, capsys):
    from core.cli_support import EXIT_OK, EXIT_USAGE
    from ledger_portal.cli import main

    recorded(acme, "run-a", [("get_customer", "read")])
    assert main(["--as", "alice", "incident", "open", "--tenant", "acme", "--title",
                 "Wrong answers", "--severity", "high", "--ticket", "PD-1"]) == EXIT_OK
    incident = Incident.objects.get(title="Wrong answers")
    assert main(["--as", "alice", "incident", "link", str(incident.pk), "--run",
                 "run-a"]) == EXIT_OK
    assert main(["--as", "alice", "incident", "link", str(incident.pk), "--run",
                 "no-such-run"]) == EXIT_USAGE
    assert main(["--as", "alice", "incident", "close", str(incident.pk), "--remediation",
                 "remediated", "--note", "fixed"]) == EXIT_OK
    capsys.readouterr()
    assert main(["--as", "alice", "incident", "show", str(incident.pk)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "status closed" in out
    assert "runs: run-a" in out
    assert "closed" in out.splitlines()[-1]


def test_a_replay_is_linked_through_the_api_and_listed_on_the_incident(
        acme, alice, recorded, user_client):
    from operations.replay import start_replay
    from runs.models import Run

    recorded(acme, "run-a", [("get_customer", "read")])
    replay = start_replay(Run.objects.get(tenant=acme, run_id="run-a"), by=alice)
    incident = open_incident(acme, "Wrong answers", by=alice)
    client = user_client(alice)

    linked = client.post(url("link", incident), {"replay_ids": [replay.pk]}, format="json")
    assert linked.status_code == 200, linked.content
    assert linked.json()["replays"] == [replay.pk]
    [shown] = client.get(url("detail", incident)).json()["replays"]
    assert (shown["id"], shown["run_id"], shown["mode"]) == (replay.pk, "run-a", "sandbox")
    unknown = client.post(url("link", incident), {"replay_ids": [replay.pk + 999]},
                          format="json")
    assert unknown.status_code == 400
    assert "no replay" in unknown.content.decode()
