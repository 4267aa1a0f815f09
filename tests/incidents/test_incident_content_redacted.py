"""An incident's title, summary and ticket ids are written by people from what agents did, so
they carry what agents carried: every face shows them redacted (strict by default), as the
incident's own timeline and the admin do: the list and detail API, the pages and the CLI."""

from __future__ import annotations

import pytest
from django.urls import reverse

from incidents.services import open_incident
from ledger_portal.cli import main

CARD = "4111 1111 1111 1111"
EMAIL = "ada@example.com"


@pytest.fixture
def incident(acme, alice):
    return open_incident(acme, f"Refund to {EMAIL} charged twice", by=alice,
                         summary=f"card {CARD} was charged twice", ticket_ids=[f"PD-12 {EMAIL}"])


def test_the_api_shows_incident_content_redacted(acme, alice, incident, user_client):
    client = user_client(alice)
    listed = client.get(reverse("api:incident-list"))
    detail = client.get(reverse("api:incident-detail", args=[incident.pk]))
    for answer in (listed, detail):
        assert answer.status_code == 200
        text = answer.content.decode()
        assert EMAIL not in text
        assert CARD not in text
        assert "charged twice" in text
    assert detail.json()["title"] == "Refund to [redacted:confidential] charged twice"


def test_the_pages_show_incident_content_redacted(acme, alice, incident, client):
    client.force_login(alice)
    for url in (reverse("incident-list"), reverse("incident-page", args=["acme", incident.pk])):
        page = client.get(url).content.decode()
        assert EMAIL not in page
        assert CARD not in page


def test_ledger_incident_show_prints_it_redacted(acme, alice, incident, capsys):
    assert main(["--as", "alice", "incident", "show", str(incident.pk)]) == 0
    out = capsys.readouterr().out
    assert EMAIL not in out
    assert CARD not in out


def test_the_escalation_mail_carries_the_title_and_tickets_redacted(acme, alice, recorded,
                                                                   contacts):
    from django.core import mail

    from incidents.services import link_to_incident

    recorded(acme, "run-x", [("send_email", "exfil")])
    incident = open_incident(acme, f"Mail to {EMAIL} went out", by=alice,
                             ticket_ids=[f"PD-7 {EMAIL}"])
    link_to_incident(incident, by=alice, call_ids=["run-x-c1"])
    (message,) = mail.outbox
    assert EMAIL not in message.subject
    assert EMAIL not in message.body
