"""The incident page in a real browser: link a run, freeze a tool, note, try to close without a
remediation status, close; the timeline and the links show each step. Another tenant's
incident is a 404."""

from __future__ import annotations

import pytest
from django.core import mail

from incidents.models import Incident
from incidents.services import open_incident
from tests.incidents.conftest import run_with_calls

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_works_an_incident_on_its_page(live_server, page, login, acme, alice,
                                                   record, settings):
    settings.LEDGER_SECURITY_CONTACTS = ["security@acme.example"]
    record(acme, run_with_calls("run-leak", [("get_customer", "read"),
                                             ("send_email", "exfil")]))
    incident = open_incident(acme, "Customer data mailed out", by=alice, severity="critical",
                             ticket_ids=["PD-77"])
    login("alice")
    page.goto(f"{live_server.url}/incidents/")
    page.click(f"text={incident.reference}: Customer data mailed out")
    page.wait_for_url(f"**/incidents/acme/{incident.pk}/")
    assert page.inner_text("#incident-tickets") == "PD-77"

    page.fill("input[name=run_ids]", "run-leak")
    page.click("#link")
    assert "Escalated 1 write/delete/exfil call(s)" in page.inner_text(".messagelist")
    assert "run-leak" in page.inner_text("#incident-links")
    assert mail.outbox[0].to == ["security@acme.example"]

    page.select_option("select[name=tool]", "send_email")
    page.click("#freeze")
    assert "freeze: tool-freezes v1 (published)" in page.inner_text("#incident-links")

    page.fill("textarea[name=body]", "customers informed")
    page.click("#add-note")

    page.click("#close")  # no remediation status chosen
    assert "remediation status" in page.inner_text(".messagelist")
    assert page.inner_text("#incident-status") == "open"

    page.select_option("#remediation", "remediated")
    page.fill("form:has(#close) textarea[name=note]", "send_email frozen, regression added")
    page.click("#close")
    assert page.inner_text("#incident-status") == "closed"
    # inner text comes upper-cased by the CSS
    events = page.locator("#incident-timeline .timeline-entry .event").all_inner_texts()
    assert [e.split(" · ")[1].strip().lower() for e in events] == [
        "opened", "linked_run", "escalated", "freeze", "note", "closed"]
    assert "send_email frozen, regression added" in page.inner_text("#incident-timeline")
    assert Incident.objects.get(pk=incident.pk).remediation_status == "remediated"


def test_another_tenants_incident_page_is_a_404(live_server, page, login, globex, charlie,
                                                 acme, alice):
    incident = open_incident(acme, "acme only", by=alice)
    login("charlie")
    response = page.goto(f"{live_server.url}/incidents/acme/{incident.pk}/")
    assert response.status == 404
    page.goto(f"{live_server.url}/incidents/?status=all")
    assert "acme only" not in page.content()
