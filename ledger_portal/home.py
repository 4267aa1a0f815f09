"""The home page at ``/``: what waits for the signed-in person, each panel shown only to those
whose roles let them act on it, each linking to where the work is done.

It sits in the project shell because it reads every app; each panel reads at most a handful of
rows (``PANEL_ROWS`` + 1, so "more" needs no COUNT over a large table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from core.actors import Viewer
from core.roles import Role
from core.tenancy import has_role

PANEL_ROWS = 5


@dataclass
class Item:
    text: str
    url: str
    note: str = ""


@dataclass
class Panel:
    """One kind of work waiting: its rows (at most ``PANEL_ROWS``), whether there are more,
    and where all of them are."""

    key: str
    title: str
    empty: str
    url: str
    items: list[Item] = field(default_factory=list)
    more: bool = False
    alarm: bool = False  # shown first and loudly when it has rows


def _panel(key: str, title: str, empty: str, url: str, rows: list[Any],
           item: Callable[[Any], Item], alarm: bool = False) -> Panel:
    return Panel(key, title, empty, url, [item(row) for row in rows[:PANEL_ROWS]],
                 more=len(rows) > PANEL_ROWS, alarm=alarm)


def approvals_panel(user: Viewer) -> Panel:
    from approvals.queue import pending_queue, why_not_decide

    # only whether they may decide: the panel shows no arguments, so none are redacted here
    mine = [r for r in pending_queue(user, limit=50) if not why_not_decide(r, user)]
    return _panel("approvals", "Approval requests you may decide",
                  "No request waits for your decision.", reverse("approval-queue"), mine,
                  lambda r: Item(f"{r.get_kind_display()}: {r.tool} ({r.action_class})",
                                 reverse("approval-queue") + f"#request-{r.pk}",
                                 f"{r.tenant.slug} · due "
                                 f"{timezone.localtime(r.due_at):%Y-%m-%d %H:%M %Z}"))


def incidents_panel(user: Viewer) -> Panel:
    from incidents.choices import IncidentStatus
    from incidents.content import shown_content
    from incidents.models import Incident

    rows = list(Incident.objects.for_user(user, Role.VIEW_LEDGER).exclude(
        status=IncidentStatus.CLOSED).select_related("tenant").order_by("-id")[:PANEL_ROWS + 1])
    # a title is written by people from what agents did: redacted like ledger content
    return _panel("incidents", "Open incidents", "No open incident.", reverse("incident-list"),
                  rows, lambda i: Item(f"{i.reference}: {shown_content(i)['title']}",
                                       reverse("incident-page", args=[i.tenant.slug, i.pk]),
                                       f"{i.tenant.slug} · {i.severity} · {i.status}"))


def divergences_panel(user: Viewer) -> Panel:
    from operations.divergences import divergences_for
    from operations.models import FollowUp

    rows = list(divergences_for(user, state=FollowUp.OPEN)[:PANEL_ROWS + 1])
    return _panel("divergences", "Replay divergences to follow up",
                  "No divergence waits for a follow-up.", reverse("divergence-list"), rows,
                  lambda s: Item(f"replay {s.replay_id} step {s.seq}: {s.tool}",
                                 reverse("replay-detail", args=[s.tenant.slug, s.replay_id])
                                 + f"#step-{s.seq}", s.tenant.slug))


def failed_runs_panel(user: Viewer) -> Panel:
    from runs.models import Run, RunStatus

    since = timezone.now() - timedelta(hours=24)
    rows = list(Run.objects.for_user(user, Role.VIEW_LEDGER).filter(
        status=RunStatus.FAILED, started_at__gte=since).select_related("tenant", "agent")
        .order_by("-started_at")[:PANEL_ROWS + 1])
    return _panel("failed-runs", "Failed runs in the last 24 hours", "No run failed in the "
                  "last 24 hours.",
                  reverse("admin:runs_run_changelist") + "?status__exact=failed&started=24h",
                  rows,
                  lambda r: Item(r.run_id, reverse("run-timeline", args=[r.tenant.slug,
                                                                         r.run_id]),
                                 f"{r.tenant.slug} · {r.agent.agent_id} · "
                                 f"{timezone.localtime(r.started_at):%Y-%m-%d %H:%M %Z}"))


def exports_panel(user: Viewer) -> Panel:
    from exports.models import ExportStatus
    from exports.services import visible_exports

    rows = list(visible_exports(user).filter(status=ExportStatus.DONE).select_related(
        "tenant").order_by("-id")[:PANEL_ROWS + 1])
    return _panel("exports", "Exports ready to download", "No export is ready.",
                  reverse("export-list"), rows,
                  lambda e: Item(f"export {e.pk}: {e.tenant.slug}, {e.redaction_level}",
                                 reverse("export-download", args=[e.pk]),
                                 f"{e.window_from:%Y-%m-%d} to {e.window_to:%Y-%m-%d}"))


def alarms_panel(user: Viewer) -> Panel:
    from runs.templatetags.ledger import integrity_alarms

    rows = integrity_alarms(user, limit=PANEL_ROWS + 1)
    return _panel("alarms", "Integrity alarms", "No integrity alarm.",
                  reverse("admin:runs_integrityalarm_changelist"), rows,
                  lambda a: Item(f"{a.tenant.slug}: run {a.run_id}",
                                 reverse("admin:runs_integrityalarm_change", args=[a.pk]),
                                 a.detail), alarm=True)


def deferred_panel(user: Viewer) -> Panel:
    """Per tenant, how many received items wait for reconciliation (the runbook's "Deferred
    pending ledger schema reconciliation"); operators apply or dismiss them."""
    from runs.deferred import pending_counts

    rows = pending_counts(user)
    listing = reverse("admin:runs_deferreditem_changelist")
    return _panel("deferred", "Deferred pending ledger schema reconciliation",
                  "Nothing waits for reconciliation.", listing + "?status__exact=pending", rows,
                  lambda row: Item(f"{row[0]}: {row[2]} pending item{'s' if row[2] != 1 else ''}",
                                   f"{listing}?status__exact=pending&tenant__id__exact={row[1]}",
                                   f"ledger reconcile --tenant {row[0]} --list"))


def governance_panel(user: Viewer) -> Panel:
    """Drafts someone else wrote, for this person to review and publish, and exceptions
    someone else asked for, for them to grant (four-eyes: never their own)."""
    from core.actors import person_of
    from policies.models import ExceptionStatus, GovernedException, PolicyVersion
    from policies.services import editors_of

    person = person_of(user)
    drafts = [v for v in PolicyVersion.objects.for_user(user, Role.MANAGE_POLICIES).filter(
        status="draft").exclude(author=person).select_related("tenant", "policy", "author")
        .order_by("-id")[:PANEL_ROWS + 1] if person is None or person.pk not in editors_of(v)]
    asked = list(GovernedException.objects.for_user(user, Role.MANAGE_POLICIES).filter(
        status__in=[ExceptionStatus.REQUESTED, ExceptionStatus.AWAITING_SECOND]).exclude(
        requested_by=person).exclude(granted_by=person).select_related("tenant").order_by(
        "-id")[:PANEL_ROWS + 1])
    rows: list[Item] = [Item(f"publish? {v.policy.name} v{v.number}: {v.change_note}",
                             reverse("admin:policies_policyversion_change", args=[v.pk]),
                             f"{v.tenant.slug} · drafted by {v.author or 'the portal'}")
                        for v in drafts[:PANEL_ROWS]]
    rows += [Item(f"grant? exception {e.pk}: {e.tool} -> {e.effect}",
                  reverse("admin:policies_governedexception_change", args=[e.pk]),
                  f"{e.tenant.slug} · {e.get_status_display()}") for e in asked[:PANEL_ROWS]]
    return Panel("governance", "Policy drafts and exceptions for you to review",
                 "No draft or exception waits for your review.",
                 reverse("admin:policies_policyversion_changelist") + "?status__exact=draft",
                 rows[:PANEL_ROWS], more=len(drafts) + len(asked) > PANEL_ROWS)


#: Each panel with the role that makes it someone's work.
PANELS: list[tuple[str, Callable[[Viewer], Panel]]] = [
    (Role.VIEW_LEDGER, alarms_panel),
    (Role.APPROVE, approvals_panel),
    (Role.VIEW_LEDGER, incidents_panel),
    (Role.VIEW_LEDGER, failed_runs_panel),
    (Role.VIEW_LEDGER, divergences_panel),
    (Role.VIEW_LEDGER, deferred_panel),
    (Role.EXPORT, exports_panel),
    (Role.MANAGE_POLICIES, governance_panel),
]


def panels_for(user: Viewer) -> list[Panel]:
    shown = [make(user) for role, make in PANELS if has_role(user, role)]
    return sorted(shown, key=lambda p: not (p.alarm and p.items))


@login_required
def home(request: HttpRequest) -> HttpResponse:
    panels = panels_for(request.user)
    return render(request, "home.html", {
        **admin.site.each_context(request), "title": "What waits for you", "panels": panels,
        "no_roles": not panels})
