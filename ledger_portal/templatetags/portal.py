"""The portal's navigation, on every page: the pages a person may use, and only those; and the
one date format of its pages."""

from __future__ import annotations

from datetime import datetime

from django import template
from django.urls import reverse

from core.actors import Viewer
from core.dates import shown_time
from core.roles import Role
from core.tenancy import allowed_tenant_ids

register = template.Library()

#: label, URL name, the role that makes the page useful (None: everyone signed in)
PAGES: list[tuple[str, str, str | None]] = [
    ("Home", "home", None),
    ("Approvals", "approval-queue", Role.APPROVE),
    ("Incidents", "incident-list", Role.VIEW_LEDGER),
    ("Divergences", "divergence-list", Role.VIEW_LEDGER),
    ("Find a run", "find-run", Role.VIEW_LEDGER),
    ("Exports", "export-list", Role.EXPORT),
    ("Policies", "admin:policies_policyversion_changelist", Role.MANAGE_POLICIES),
    ("Admin", "admin:index", None),
    ("API", "api-docs", None),
]


@register.simple_tag
def portal_pages(user: Viewer, current: str = "") -> list[dict[str, object]]:
    """The pages ``user`` may use, in order, each marked when it is the one shown."""
    if not getattr(user, "is_authenticated", False):
        return []
    shown = []
    for label, name, role in PAGES:
        # the roles the request already read; a superuser (None) has them all
        if role is None or allowed_tenant_ids(user, role) != frozenset():
            url = reverse(name)
            shown.append({"label": label, "url": url, "current": current == url})
    return shown


@register.filter
def when(value: datetime | None) -> str:
    """A moment as every portal page shows it: ``2026-12-06 13:40:05 UTC``."""
    return shown_time(value)
