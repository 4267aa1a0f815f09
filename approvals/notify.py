"""Telling people about HITL requests that wait too long: pluggable notifiers.

``LEDGER_NOTIFIER`` names the class (default: e-mail to the tenant's approvers through
Django's e-mail backend). ``WebhookNotifier`` posts a JSON event to ``LEDGER_NOTIFY_WEBHOOK_URL``.
A notifier never raises: a failed notification is logged, the escalation stands.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx2
from django.conf import settings
from django.core.mail import send_mail
from django.utils.module_loading import import_string

from core import egress
from core.roles import Role

log = logging.getLogger(__name__)


class Notifier:
    def notify(self, event: str, request: Any) -> None:
        raise TypeError(f"{type(self).__name__} must define notify()")

    @staticmethod
    def summary(event: str, request: Any) -> dict[str, Any]:
        return {"event": event, "request": request.pk, "tenant": request.tenant.slug,
                "kind": request.kind, "tool": request.tool,
                "action_class": request.action_class, "run_id": request.run_id,
                "call_id": request.call_id, "requested_by": request.requested_by,
                "created_at": request.created_at.isoformat(),
                "due_at": request.due_at.isoformat()}


def approvers_of(tenant: Any) -> list[str]:
    from guardian.shortcuts import get_users_with_perms

    users: Any = get_users_with_perms(tenant, only_with_perms_in=[Role.APPROVE.value],
                                 with_group_users=True, with_superusers=False)
    return sorted({u.email for u in users if u.email and u.is_active})


class EmailNotifier(Notifier):
    def notify(self, event: str, request: Any) -> None:
        recipients = approvers_of(request.tenant)
        if not recipients:
            log.warning("no approver with an e-mail address on %s for request %s",
                        request.tenant.slug, request.pk)
            return
        facts = self.summary(event, request)
        body = "\n".join(f"{k}: {v}" for k, v in facts.items())
        try:
            send_mail(f"[ledger-portal] HITL request {request.pk} {event}: {request.tool}",
                      body, settings.DEFAULT_FROM_EMAIL, recipients)
        except Exception:  # a notifier never takes the escalation down with it
            log.exception("e-mail notification of request %s failed", request.pk)


class WebhookNotifier(Notifier):
    def notify(self, event: str, request: Any) -> None:
        url = settings.LEDGER_NOTIFY_WEBHOOK_URL
        if not url.startswith(("http://", "https://")):
            log.error("LEDGER_NOTIFY_WEBHOOK_URL is not http(s); request %s not notified",
                      request.pk)
            return
        body = json.dumps(self.summary(event, request)).encode()
        try:
            response = egress.post(url, content=body, timeout=5,
                                   headers={"Content-Type": "application/json"})
        except (egress.EgressRefused, httpx2.HTTPError):
            log.exception("webhook notification of request %s failed", request.pk)
            return
        if response.status_code >= 300:
            log.error("webhook notification of request %s: HTTP %s", request.pk,
                      response.status_code)


def notifier() -> Notifier:
    notifier_class: Any = import_string(settings.LEDGER_NOTIFIER or "approvals.notify."
                                        "EmailNotifier")
    notifier: Notifier = notifier_class()
    return notifier

