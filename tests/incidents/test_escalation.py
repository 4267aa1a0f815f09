"""Escalation: linking write, delete or exfil calls (directly or through their run) tells
security and data owners, once per call, and the ledger records that it did."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from django.core import mail

from incidents.services import incident_timeline, link_to_incident, open_incident


def escalations(incident):
    return [a for a in incident_timeline(incident) if a.data["event"] == "escalated"]


def test_linking_an_exfil_call_emails_security_and_data_owners(acme, alice, recorded, contacts):
    recorded(acme, "run-x", [("get_customer", "read"), ("send_email", "exfil")])
    incident = open_incident(acme, "Customer data mailed out", by=alice, severity="critical")

    linked = link_to_incident(incident, by=alice, call_ids=["run-x-c2"])

    assert linked.escalated_calls == ["run-x-c2"]
    (message,) = mail.outbox
    assert sorted(message.to) == ["dpo@acme.example", "security@acme.example"]
    assert incident.reference in message.subject
    assert "run-x-c2" in message.body
    assert "exfil" in message.body
    (note,) = escalations(incident)
    assert note.data["calls"] == ["run-x-c2"]
    assert note.data["delivery"] == {"channel": "email", "recipients": [
        "dpo@acme.example", "security@acme.example"], "delivered": True, "error": ""}
    assert note.data["security"] == ["security@acme.example"]


def test_linking_a_run_escalates_its_write_and_delete_calls_once(acme, alice, recorded, contacts):
    recorded(acme, "run-w", [("get_customer", "read"), ("update_ticket", "write"),
                             ("delete_ticket", "delete")])
    incident = open_incident(acme, "Tickets lost", by=alice)

    link_to_incident(incident, by=alice, run_ids=["run-w"])
    link_to_incident(incident, by=alice, call_ids=["run-w-c2", "run-w-c3"])  # already reported

    assert len(mail.outbox) == 1
    (note,) = escalations(incident)
    assert note.data["calls"] == ["run-w-c2", "run-w-c3"]
    assert note.data["action_classes"] == ["delete", "write"]
    incident.refresh_from_db()
    assert incident.escalated_call_ids == ["run-w-c2", "run-w-c3"]
    assert incident.last_escalated_at is not None


def test_read_only_calls_do_not_escalate(acme, alice, recorded, contacts):
    recorded(acme, "run-r", [("get_customer", "read"), ("search_tickets", "read")])
    incident = open_incident(acme, "Slow answers", by=alice)
    link_to_incident(incident, by=alice, run_ids=["run-r"])
    assert not mail.outbox
    assert not escalations(incident)


def test_a_tenants_own_contacts_replace_the_global_ones(acme, alice, recorded, contacts):
    contacts.LEDGER_INCIDENT_CONTACTS = {"acme": {"security": ["soc@acme.example"]}}
    recorded(acme, "run-x", [("send_email", "exfil")])
    incident = open_incident(acme, "Customer data mailed out", by=alice)
    link_to_incident(incident, by=alice, run_ids=["run-x"])
    assert mail.outbox[0].to == ["soc@acme.example"]


def test_an_undeliverable_escalation_is_recorded_as_such(acme, alice, recorded, contacts):
    contacts.LEDGER_SECURITY_CONTACTS, contacts.LEDGER_DATA_OWNER_CONTACTS = [], []
    recorded(acme, "run-x", [("send_email", "exfil")])
    incident = open_incident(acme, "Customer data mailed out", by=alice)
    link_to_incident(incident, by=alice, run_ids=["run-x"])
    (note,) = escalations(incident)
    assert note.data["delivery"]["delivered"] is False
    assert "no security or data-owner contact" in note.data["delivery"]["error"]
    assert "could not notify" in note.body


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_webhook_notifier_posts_the_escalation(acme, alice, recorded, contacts):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    contacts.LEDGER_INCIDENT_NOTIFIER = "incidents.notify.WebhookNotifier"
    contacts.LEDGER_INCIDENT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hook"
    recorded(acme, "run-x", [("send_email", "exfil")])
    incident = open_incident(acme, "Customer data mailed out", by=alice)
    try:
        link_to_incident(incident, by=alice, run_ids=["run-x"])
    finally:
        server.shutdown()
        server.server_close()
    (event,) = Hook.received
    assert (event["event"], event["incident"], event["action_classes"]) == (
        "escalated", incident.reference, ["exfil"])
    assert event["security"] == ["security@acme.example"]
    assert not mail.outbox
    assert escalations(incident)[0].data["delivery"]["channel"] == "webhook"
