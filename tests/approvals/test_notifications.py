"""Approvers hear of a request when it is created (and when it is escalated or expires), where
their tenant routes it: e-mail, a signed webhook, or a Slack-compatible incoming webhook, per
action class. Each attempt is recorded; what is sent never carries the arguments; a channel
that fails never undoes the request; one tenant's routes never hear of another's requests."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from approvals.models import ApprovalRoute, Channel, NotificationDelivery
from approvals.notify import SIGNATURE_HEADER
from approvals.services import escalate_overdue, request_approval
from tests.celery_conf import celery_conf

pytestmark = pytest.mark.django_db(transaction=True)  # deliveries follow real commits

HOOK_KEY = "whk-test-5e3c"
PLANTED = "sk_live_PLANTED_ARGUMENT_SECRET"


class Sink(BaseHTTPRequestHandler):
    """A receiver on loopback: records each delivery's headers and body."""

    received: list[tuple[str, dict[str, str], bytes]]
    status = 204

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def sink() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    server.received, server.status = [], 204  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _delivered_at_once() -> Iterator[None]:
    with celery_conf(task_always_eager=True):
        yield


def route(tenant: Any, channel: str, **fields: Any) -> ApprovalRoute:
    made = ApprovalRoute(tenant=tenant, name=f"{channel} route", channel=channel, **fields)
    made.full_clean()
    made.save()
    return made


def ask(tenant: Any, action_class: str = "write", tool: str = "refund_payment") -> Any:
    return request_approval(tenant, tool=tool, action_class=action_class,
                            arguments={"api_key": PLANTED, "amount_cents": 50000},
                            run_id="run-7", requested_by="refund-agent")


def test_a_signed_webhook_hears_of_a_new_request(acme, sink, monkeypatch, settings):
    settings.LEDGER_PUBLIC_URL = "https://ledger.example.com"
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/approvals",
          secret_ref="env:APPROVALS_HOOK_KEY")

    request = ask(acme)

    [(path, headers, body)] = sink.received
    assert path == "/approvals"
    timestamp, mac = (part.split("=", 1)[1] for part in headers[SIGNATURE_HEADER].split(","))
    expected = hmac.new(HOOK_KEY.encode(), f"{timestamp}.".encode() + body,
                        hashlib.sha256).hexdigest()
    assert hmac.compare_digest(mac, expected)
    event = json.loads(body)
    assert (event["event"], event["request"], event["tool"], event["action_class"]) == (
        "created", request.pk, "refund_payment", "write")
    assert event["url"] == f"https://ledger.example.com/approvals/#request-{request.pk}"
    assert headers["X-Ledger-Event"] == "approval.created"
    assert PLANTED not in body.decode()
    [delivery] = NotificationDelivery.objects.filter(request=request)
    assert delivery.delivered
    assert delivery.detail == "HTTP 204"


def test_a_slack_compatible_webhook_gets_a_readable_message(acme, sink, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_SLACK_URL", f"{sink.url}/services/T0/B0/xyz")
    route(acme, Channel.SLACK, secret_ref="env:SLACK_URL")

    request = ask(acme, action_class="exfil", tool="send_report")

    [(path, _, body)] = sink.received
    assert path == "/services/T0/B0/xyz"
    message = json.loads(body)
    assert f"HITL request {request.pk} created: `send_report` (exfil) in acme" in message["text"]
    assert "needs 2 approval(s)" in message["blocks"][0]["text"]["text"]
    assert PLANTED not in body.decode()


def test_e_mail_goes_to_the_routes_addresses(acme):
    route(acme, Channel.EMAIL, target="payments-oncall@acme.example, cfo@acme.example")
    request = ask(acme)
    [sent] = mail.outbox
    assert sent.to == ["payments-oncall@acme.example", "cfo@acme.example"]
    assert f"HITL request {request.pk} created" in sent.subject
    assert PLANTED not in sent.body


def test_routes_are_chosen_by_action_class(acme, sink, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/exfil-only", action_classes=["exfil"],
          secret_ref="env:APPROVALS_HOOK_KEY")
    route(acme, Channel.EMAIL, target="approvers@acme.example")

    ask(acme, action_class="write")
    exfil = ask(acme, action_class="exfil")

    assert [json.loads(body)["request"] for _, _, body in sink.received] == [exfil.pk]
    assert len(mail.outbox) == 2


def test_one_tenants_routes_never_hear_of_anothers_requests(acme, globex, sink, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/acme", secret_ref="env:APPROVALS_HOOK_KEY")
    ask(globex)
    assert sink.received == []


def test_escalation_and_expiry_reach_the_routes_that_ask_for_them(acme, sink, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/late", events=["escalated", "expired"],
          secret_ref="env:APPROVALS_HOOK_KEY")
    acme.approval_escalate_minutes, acme.approval_timeout_minutes = 10, 60
    acme.save()
    request = ask(acme)
    assert sink.received == []  # not told of the creation

    escalate_overdue(timezone.now() + timedelta(minutes=11))
    escalate_overdue(timezone.now() + timedelta(minutes=61))

    assert [json.loads(body)["event"] for _, _, body in sink.received] == [
        "escalated", "expired"]
    assert list(NotificationDelivery.objects.filter(request=request).order_by("id")
                .values_list("event", "delivered")) == [("escalated", True), ("expired", True)]


def test_a_tenant_with_no_route_is_served_by_the_default_notifier(acme, alice):
    alice.email = "alice@acme.example"
    alice.save()
    request = ask(acme)
    [sent] = mail.outbox
    assert sent.to == ["alice@acme.example"]
    [delivery] = NotificationDelivery.objects.filter(request=request)
    assert delivery.route is None
    assert delivery.channel == "email"
    assert delivery.delivered


def test_a_failing_channel_is_recorded_and_the_request_stands(acme, sink, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    sink.status = 500
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/down", secret_ref="env:APPROVALS_HOOK_KEY")
    request = ask(acme)
    [delivery] = NotificationDelivery.objects.filter(request=request)
    assert not delivery.delivered
    assert delivery.detail == "HTTP 500"
    request.refresh_from_db()
    assert request.status == "pending"


def test_a_webhook_to_a_host_the_egress_guard_refuses_is_not_sent(acme, monkeypatch, settings):
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    route(acme, Channel.WEBHOOK, target="https://169.254.169.254/latest/meta-data",
          secret_ref="env:APPROVALS_HOOK_KEY")
    request = ask(acme)
    [delivery] = NotificationDelivery.objects.filter(request=request)
    assert not delivery.delivered
    assert delivery.detail.startswith("refused:")


@pytest.mark.parametrize("url", ["https://10.255.255.1/services/T0/B0/SECRETPATH",
                                 "ftp://hooks.example.com/services/T0/B0/SECRETPATH"])
def test_a_slack_url_that_fails_is_never_written_down(acme, monkeypatch, url):
    """The incoming-webhook URL is a credential: a failure says why, never the URL."""
    monkeypatch.setenv("LEDGER_TENANT_ACME_SLACK_URL", url)
    route(acme, Channel.SLACK, secret_ref="env:SLACK_URL")
    request = ask(acme)
    [delivery] = NotificationDelivery.objects.filter(request=request)
    assert not delivery.delivered
    assert "SECRETPATH" not in delivery.detail


def test_a_missing_signing_key_is_recorded_by_its_reference(acme, sink):
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/x", secret_ref="env:NOT_SET_ANYWHERE")
    request = ask(acme)
    [delivery] = NotificationDelivery.objects.filter(request=request)
    assert not delivery.delivered
    assert "env:NOT_SET_ANYWHERE" in delivery.detail
    assert sink.received == []


def test_nothing_is_sent_for_a_request_whose_transaction_rolled_back(acme, sink, monkeypatch):
    monkeypatch.setenv("LEDGER_TENANT_ACME_APPROVALS_HOOK_KEY", HOOK_KEY)
    route(acme, Channel.WEBHOOK, target=f"{sink.url}/x", secret_ref="env:APPROVALS_HOOK_KEY")

    def ask_then_fail() -> None:
        with transaction.atomic():
            ask(acme)
            raise RuntimeError("the decision failed after asking")

    with pytest.raises(RuntimeError):
        ask_then_fail()
    assert sink.received == []


@pytest.mark.parametrize(("fields", "field"), [
    ({"channel": Channel.WEBHOOK, "target": "https://hooks.example.com/x"}, "secret_ref"),
    ({"channel": Channel.WEBHOOK, "target": "http://hooks.example.com/x",
      "secret_ref": "env:K"}, "target"),
    ({"channel": Channel.SLACK, "target": "https://hooks.slack.com/services/T/B/x",
      "secret_ref": "env:K"}, "target"),
    ({"channel": Channel.SLACK}, "secret_ref"),
    ({"channel": Channel.EMAIL, "action_classes": ["everything"]}, "action_classes"),
    ({"channel": Channel.EMAIL, "events": ["sometimes"]}, "events"),
    ({"channel": Channel.EMAIL, "secret_ref": "sk_live_raw_value"}, "secret_ref"),
])
def test_a_route_that_cannot_work_is_refused_with_the_field_to_fix(acme, fields, field):
    with pytest.raises(ValidationError) as refused:
        route(acme, **fields)
    assert field in refused.value.message_dict
