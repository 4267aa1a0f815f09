"""Escalating an incident to security and data owners: pluggable notifiers.

Who hears about it: ``LEDGER_INCIDENT_CONTACTS`` (JSON, per tenant slug:
``{"acme": {"security": [...], "data_owners": [...]}}``) or, for tenants not named there, the
global ``LEDGER_SECURITY_CONTACTS`` and ``LEDGER_DATA_OWNER_CONTACTS``. How:
``LEDGER_INCIDENT_NOTIFIER`` names the class (default: e-mail through Django's backend);
``WebhookNotifier`` posts a JSON event to ``LEDGER_INCIDENT_WEBHOOK_URL``.

A notifier never raises: it reports what it delivered, and the incident service records that
report in the ledger, failures included.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx2
from django.conf import settings
from django.core.mail import send_mail
from django.utils.module_loading import import_string

from core import egress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Contacts:
    security: list[str] = field(default_factory=list)
    data_owners: list[str] = field(default_factory=list)

    @property
    def everyone(self) -> list[str]:
        return sorted({*self.security, *self.data_owners})


@dataclass(frozen=True)
class Delivery:
    """What a notifier did, as the ledger records it."""

    channel: str
    recipients: list[str]
    delivered: bool
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def contacts_for(tenant: Any) -> Contacts:
    configured: Any = settings.LEDGER_INCIDENT_CONTACTS
    per_tenant = configured.get(tenant.slug)
    if per_tenant is not None:
        return Contacts(list(per_tenant.get("security", [])),
                        list(per_tenant.get("data_owners", [])))
    return Contacts(list(settings.LEDGER_SECURITY_CONTACTS),
                    list(settings.LEDGER_DATA_OWNER_CONTACTS))


class IncidentNotifier:
    channel = "none"

    def notify(self, event: str, facts: dict[str, Any], contacts: Contacts) -> Delivery:
        raise TypeError(f"{type(self).__name__} must define notify()")


class EmailNotifier(IncidentNotifier):
    channel = "email"

    def notify(self, event: str, facts: dict[str, Any], contacts: Contacts) -> Delivery:
        recipients = contacts.everyone
        if not recipients:
            log.warning("no security or data-owner contact for %s; %s not e-mailed",
                        facts.get("tenant"), facts.get("incident"))
            return Delivery(self.channel, [], False, "no security or data-owner contact "
                            "configured")
        body = "\n".join(f"{k}: {v}" for k, v in facts.items())
        subject = f"[ledger-portal] {facts['incident']} {event}: {facts.get('title', '')}"
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, recipients)
        except Exception as exc:  # a notifier never takes the incident down with it
            log.exception("e-mail escalation of %s failed", facts.get("incident"))
            return Delivery(self.channel, recipients, False, f"{type(exc).__name__}: {exc}")
        return Delivery(self.channel, recipients, True)


class WebhookNotifier(IncidentNotifier):
    channel = "webhook"

    def notify(self, event: str, facts: dict[str, Any], contacts: Contacts) -> Delivery:
        url = settings.LEDGER_INCIDENT_WEBHOOK_URL
        if not url.startswith(("http://", "https://")):
            return Delivery(self.channel, [], False, "LEDGER_INCIDENT_WEBHOOK_URL is not "
                            "http(s)")
        payload = {"event": event, **facts, "security": contacts.security,
                   "data_owners": contacts.data_owners}
        try:
            response = egress.post(url, content=json.dumps(payload, default=str).encode(),
                                   timeout=5, headers={"Content-Type": "application/json"})
        except (egress.EgressRefused, httpx2.HTTPError) as exc:
            log.exception("webhook escalation of %s failed", facts.get("incident"))
            return Delivery(self.channel, [url], False, f"{type(exc).__name__}: {exc}")
        if response.status_code >= 300:
            return Delivery(self.channel, [url], False, f"HTTP {response.status_code}")
        return Delivery(self.channel, [url], True)


def notifier() -> IncidentNotifier:
    notifier_class: type[IncidentNotifier] = import_string(settings.LEDGER_INCIDENT_NOTIFIER
                                                           or "incidents.notify.EmailNotifier")
    return notifier_class()
