"""The incident pages and admin (server side; the browser test is in tests/integration):
the list, one incident with its actions, 404 across tenants, opening from the admin."""

from __future__ import annotations

from django.urls import reverse

from incidents.models import Incident
from incidents.services import incident_timeline, open_incident


def act(client, incident, **form):
    return client.post(reverse("incident-act", args=[incident.tenant.slug, incident.pk]),
                       form, follow=True)


def messages_of(response):
    return [str(m) for m in response.context["messages"]]


def test_an_operator_works_an_incident_from_its_page(acme, alice, recorded, client, contacts):
    recorded(acme, "run-leak", [("get_customer", "read"), ("send_email", "exfil")])
    incident = open_incident(acme, "Customer data mailed out", by=alice, ticket_ids=["PD-77"])
    client.force_login(alice)
    listed = client.get(reverse("incident-list")).content.decode()
    assert f"{incident.reference}: Customer data mailed out" in listed

    linked = act(client, incident, action="link", run_ids="run-leak", ticket_ids="PD-78")
    assert "Escalated 1 write/delete/exfil call(s)" in messages_of(linked)[0]
    act(client, incident, action="freeze", tool="send_email", mode="deny")
    act(client, incident, action="note", body="customers informed")
    refused = act(client, incident, action="close", remediation_status="", note="")
    assert "remediation status" in messages_of(refused)[0]
    act(client, incident, action="close", remediation_status="accepted_risk", note="ok")

    page = client.get(reverse("incident-page", args=["acme", incident.pk])).content.decode()
    assert 'id="incident-status">closed' in page
    assert "freeze: tool-freezes v1 (published)" in page
    assert "PD-77, PD-78" in page
    assert [a.data.get("event", "freeze") for a in incident_timeline(incident)] == [
        "opened", "linked_run", "linked_tickets", "escalated", "freeze", "note", "closed"]
    assert 'name="action" value="note"' not in page  # a closed incident takes no more actions


def test_a_reader_sees_the_incident_without_its_actions(acme, alice, bob, client):
    from core.services import grant_role

    grant_role(bob, "view_ledger", acme)
    incident = open_incident(acme, "Wrong answers", by=alice)
    client.force_login(bob)
    page = client.get(reverse("incident-page", args=["acme", incident.pk])).content.decode()
    assert "Wrong answers" in page
    assert 'name="action"' not in page
    refused = act(client, incident, action="note", body="x")
    assert "operate role" in messages_of(refused)[0]


def test_another_tenants_incident_is_a_404_and_not_listed(acme, alice, charlie, client):
    incident = open_incident(acme, "acme only", by=alice)
    client.force_login(charlie)
    assert client.get(reverse("incident-page", args=["acme", incident.pk])).status_code == 404
    assert client.post(reverse("incident-act", args=["acme", incident.pk]),
                       {"action": "note", "body": "x"}).status_code == 404
    assert "acme only" not in client.get(reverse("incident-list") + "?status=all").content.decode()


def test_opening_an_incident_in_the_admin_goes_through_the_service(acme, alice, client):
    client.force_login(alice)
    response = client.post(reverse("admin:incidents_incident_add"), {
        "tenant": acme.pk, "title": "Opened in the admin", "severity": "low",
        "summary": "", "ticket_ids": "JIRA-1, JIRA-2"}, follow=True)
    assert response.status_code == 200
    incident = Incident.objects.get(title="Opened in the admin")
    assert incident.ticket_ids == ["JIRA-1", "JIRA-2"]
    assert [a.data["event"] for a in incident_timeline(incident)] == ["opened"]
    client.post(reverse("admin:incidents_incident_change", args=[incident.pk]), {
        "title": "Opened in the admin", "severity": "high", "summary": "",
        "ticket_ids": "JIRA-1, JIRA-2"})
    incident.refresh_from_db()
    assert incident.severity == "high"
    assert [a.data["event"] for a in incident_timeline(incident)] == ["opened", "edited"]
