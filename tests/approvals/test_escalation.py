"""Requests that wait too long: escalated once (flagged, approvers notified), then expired,
through a pluggable notifier (e-mail by default, webhook optional)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.utils import timezone

from approvals.models import ApprovalRequest, Status
from approvals.services import escalate_overdue, request_approval


@pytest.fixture
def waiting(acme, alice):
    alice.email = "alice@acme.example"
    alice.save()
    acme.approval_escalate_minutes, acme.approval_timeout_minutes = 10, 60
    acme.save()
    return request_approval(acme, tool="send_email", action_class="exfil",
                            arguments={"to": "x@example.com"}, requested_by="mailer")


def test_a_request_is_escalated_once_then_expires(waiting):
    assert waiting.due_at == pytest.approx(waiting.created_at + timedelta(minutes=60),
                                           abs=timedelta(seconds=5))
    now = timezone.now()
    assert escalate_overdue(now + timedelta(minutes=5)) == {"expired": 0, "escalated": 0}
    assert escalate_overdue(now + timedelta(minutes=11)) == {"expired": 0, "escalated": 1}
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["alice@acme.example"]
    assert "escalated" in mail.outbox[0].subject
    assert escalate_overdue(now + timedelta(minutes=12))["escalated"] == 0  # only once
    waiting.refresh_from_db()
    assert waiting.escalated_at is not None
    assert waiting.status == Status.PENDING

    assert escalate_overdue(now + timedelta(minutes=61)) == {"expired": 1, "escalated": 0}
    waiting.refresh_from_db()
    assert waiting.status == Status.EXPIRED
    assert "expired" in mail.outbox[-1].subject


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_webhook_notifier_posts_the_event(waiting, settings):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Hook.received = []
    settings.LEDGER_NOTIFIER = "approvals.notify.WebhookNotifier"
    settings.LEDGER_NOTIFY_WEBHOOK_URL = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        escalate_overdue(timezone.now() + timedelta(minutes=11))
    finally:
        server.shutdown()
        server.server_close()
    assert [(e["event"], e["request"], e["tool"]) for e in Hook.received] == [
        ("escalated", waiting.pk, "send_email")]
    assert not mail.outbox


def test_a_failing_notifier_does_not_undo_the_escalation(waiting, settings):
    settings.LEDGER_NOTIFIER = "approvals.notify.WebhookNotifier"
    settings.LEDGER_NOTIFY_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens"
    assert escalate_overdue(timezone.now() + timedelta(minutes=11))["escalated"] == 1
    assert ApprovalRequest.objects.get(pk=waiting.pk).escalated_at is not None
