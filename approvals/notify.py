"""Telling approvers about HITL requests: when one is created, when it waits past the tenant's
escalation time, and when it expires undecided.

Each tenant routes these events, per action class, to channels (``ApprovalRoute``): e-mail, a
signed JSON webhook, or a Slack-compatible incoming webhook. A tenant with no enabled route is
served by the portal's default notifier (``LEDGER_NOTIFIER``: e-mail to the tenant's
approvers; ``WebhookNotifier`` posts to ``LEDGER_NOTIFY_WEBHOOK_URL``). Every attempt is
recorded (``NotificationDelivery``) with what happened; what is sent names the request, never
its arguments. Delivering never raises: a failure is recorded and logged, the request stands.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import Any, NamedTuple

import httpx2
from django.conf import settings
from django.core.mail import send_mail
from django.utils.module_loading import import_string

from core import egress
from core.roles import Role
from core.secrets import SecretError, resolve_secret, scrub

from .models import ApprovalRequest, ApprovalRoute, Channel, NotificationDelivery

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Ledger-Signature"


class Delivery(NamedTuple):
    delivered: bool
    detail: str


def queue_link(request: ApprovalRequest) -> str:
    """Where the request waits in the queue, when the portal knows its public address."""
    base = settings.LEDGER_PUBLIC_URL.rstrip("/")
    return f"{base}/approvals/#request-{request.pk}" if base else ""


def summary(event: str, request: ApprovalRequest) -> dict[str, Any]:
    """What every channel says about a request: enough to find and judge it, no arguments."""
    return {"event": event, "request": request.pk, "tenant": request.tenant.slug,
            "kind": request.kind, "tool": request.tool, "action_class": request.action_class,
            "run_id": request.run_id, "call_id": request.call_id,
            "requested_by": request.requested_by, "approvals_needed": request.approvals_needed,
            "created_at": request.created_at.isoformat(), "due_at": request.due_at.isoformat(),
            "url": queue_link(request)}


def signature(key: str, timestamp: int, body: bytes) -> str:
    """``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``: a receiver recomputes it with
    the shared key and refuses old timestamps, so a captured delivery cannot be replayed."""
    mac = hmac.new(key.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def _post(url: str, body: bytes, headers: dict[str, str]) -> Delivery:
    try:
        response = egress.post(url, content=body, timeout=5,
                               headers={"Content-Type": "application/json", **headers})
    except egress.EgressRefused as exc:
        return Delivery(False, f"refused: {exc}"[:500])
    except httpx2.HTTPError as exc:
        return Delivery(False, f"{type(exc).__name__}")
    return Delivery(response.status_code < 300, f"HTTP {response.status_code}")


def send_email(recipients: list[str], event: str, request: ApprovalRequest) -> Delivery:
    if not recipients:
        return Delivery(False, "no recipient: no approver of the tenant has an e-mail address")
    facts = summary(event, request)
    body = "\n".join(f"{key}: {value}" for key, value in facts.items() if value != "")
    try:
        send_mail(f"[ledger-portal] HITL request {request.pk} {event}: {request.tool}",
                  body, settings.DEFAULT_FROM_EMAIL, recipients)
    except Exception as exc:  # a notifier never takes the request down with it
        log.exception("e-mail notification of request %s failed", request.pk)
        return Delivery(False, f"{type(exc).__name__}")
    return Delivery(True, f"{len(recipients)} recipient(s)")


def send_webhook(url: str, key: str, event: str, request: ApprovalRequest) -> Delivery:
    body = json.dumps(summary(event, request), sort_keys=True).encode()
    return _post(url, body, {SIGNATURE_HEADER: signature(key, int(time.time()), body),
                             "X-Ledger-Event": f"approval.{event}",
                             "X-Ledger-Delivery": str(uuid.uuid4())})


def slack_message(event: str, request: ApprovalRequest) -> dict[str, Any]:
    """An incoming-webhook payload (Slack, Mattermost, Rocket.Chat read ``text``; Slack
    shows ``blocks``)."""
    facts = summary(event, request)
    headline = (f"HITL request {request.pk} {event}: `{request.tool}` "
                f"({request.action_class}) in {facts['tenant']}")
    lines = [f"*{headline}*", f"asked by {request.requested_by or 'an agent'}"
             + (f" for run `{request.run_id}`" if request.run_id else ""),
             f"needs {request.approvals_needed} approval(s); due {facts['due_at']}"]
    if facts["url"]:
        lines.append(f"<{facts['url']}|Open it in the approval queue>")
    return {"text": headline, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}]}


def approvers_of(tenant: Any) -> list[str]:
    from guardian.shortcuts import get_users_with_perms

    users: Any = get_users_with_perms(tenant, only_with_perms_in=[Role.APPROVE.value],
                                      with_group_users=True, with_superusers=False)
    return sorted({u.email for u in users if u.email and u.is_active})


def deliver(route: ApprovalRoute, event: str, request: ApprovalRequest) -> Delivery:
    """Send ``event`` about ``request`` through ``route``."""
    try:
        secret = resolve_secret(request.tenant.slug, route.secret_ref) \
            if route.secret_ref else ""
    except SecretError as exc:
        return Delivery(False, str(exc)[:500])
    if route.channel == Channel.EMAIL:
        listed = [a.strip() for a in route.target.split(",") if a.strip()]
        return send_email(listed or approvers_of(request.tenant), event, request)
    if route.channel == Channel.WEBHOOK:
        return send_webhook(route.target, secret, event, request)
    body = json.dumps(slack_message(event, request)).encode()
    outcome = _post(secret, body, {})
    return outcome._replace(detail=scrub(outcome.detail, secret))  # the URL is a credential


def notify_approvers(request: ApprovalRequest, event: str) -> list[NotificationDelivery]:
    """Tell the approvers of ``request``'s tenant about ``event`` through each route that
    covers it (or the default notifier when the tenant has none), and record each attempt."""
    routes = list(ApprovalRoute.objects.filter(tenant_id=request.tenant_id, enabled=True))
    attempts: list[tuple[ApprovalRoute | None, str, Delivery]] = []
    if routes:
        attempts = [(route, route.channel, deliver(route, event, request))
                    for route in routes if route.covers(event, request.action_class)]
    else:
        default = notifier()
        attempts = [(None, default.channel, default.notify(event, request))]
    recorded = []
    for route, channel, outcome in attempts:
        if not outcome.delivered:
            log.warning("notifying %s of request %s (%s) failed: %s", channel, request.pk,
                        event, outcome.detail)
        recorded.append(NotificationDelivery.objects.create(
            tenant_id=request.tenant_id, request=request, route=route, channel=channel,
            event=event, delivered=outcome.delivered, detail=outcome.detail[:500]))
    return recorded


class Notifier:
    """The portal's default notifier, for tenants that route nowhere (``LEDGER_NOTIFIER``)."""

    channel = ""

    def notify(self, event: str, request: ApprovalRequest) -> Delivery:
        raise TypeError(f"{type(self).__name__} must define notify()")


class EmailNotifier(Notifier):
    channel = Channel.EMAIL

    def notify(self, event: str, request: ApprovalRequest) -> Delivery:
        return send_email(approvers_of(request.tenant), event, request)


class WebhookNotifier(Notifier):
    """Posts the event, unsigned, to ``LEDGER_NOTIFY_WEBHOOK_URL`` (a tenant's routes sign
    theirs with the tenant's key)."""

    channel = Channel.WEBHOOK

    def notify(self, event: str, request: ApprovalRequest) -> Delivery:
        url = settings.LEDGER_NOTIFY_WEBHOOK_URL
        if not url.startswith(("http://", "https://")):
            return Delivery(False, "LEDGER_NOTIFY_WEBHOOK_URL is not an http(s) URL")
        return _post(url, json.dumps(summary(event, request)).encode(), {})


def notifier() -> Notifier:
    notifier_class: Any = import_string(settings.LEDGER_NOTIFIER or "approvals.notify."
                                        "EmailNotifier")
    chosen: Notifier = notifier_class()
    return chosen
