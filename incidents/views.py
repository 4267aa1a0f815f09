"""Incident pages: the list, and one incident with its links, timeline and actions.
Thin: scope, call a service, render. Pages 404 across tenants."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.actors import Actor, actor_of
from core.roles import Role
from core.tenancy import has_role
from runs.models import Run, Tool, ToolCall

from . import services
from .api.presenters import incident_detail
from .content import shown_content
from .models import CLOSING_REMEDIATIONS, Incident, IncidentStatus, Severity

LIST_LIMIT = 200


@login_required
def incident_list(request: HttpRequest) -> HttpResponse:
    incidents = Incident.objects.for_user(request.user, Role.VIEW_LEDGER).select_related("tenant")
    shown = request.GET.get("status", "active")
    if shown == "active":
        incidents = incidents.exclude(status=IncidentStatus.CLOSED)
    elif shown in IncidentStatus.values:
        incidents = incidents.filter(status=shown)
    listed = list(incidents[:LIST_LIMIT])
    for item in listed:  # as readers see them: redacted like ledger content
        item.shown = shown_content(item)  # type: ignore[attr-defined]
    return render(request, "incidents/list.html", {
        **admin.site.each_context(request), "title": "Incidents",
        "incidents": listed, "shown": shown,
        "statuses": ["active", *IncidentStatus.values, "all"]})


def _incident_or_404(request: HttpRequest, tenant: str, pk: int) -> Incident:
    incident = Incident.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, pk=pk).select_related("tenant").first()
    if incident is None:
        raise Http404("No such incident in your tenants.")
    return incident


@login_required
def incident_page(request: HttpRequest, tenant: str, pk: int) -> HttpResponse:
    incident = _incident_or_404(request, tenant, pk)
    detail = incident_detail(incident, request.user)
    can_operate = has_role(request.user, Role.OPERATE, incident.tenant_id)
    return render(request, "incidents/detail.html", {
        **admin.site.each_context(request), "title": f"{incident.reference}: {detail['title']}",
        "incident": incident, "detail": detail, "can_operate": can_operate,
        "closing_remediations": CLOSING_REMEDIATIONS, "severities": Severity.values,
        "tools": (Tool.objects.filter(tenant_id=incident.tenant_id).values_list("name", flat=True)
                  if can_operate and not incident.is_closed else []),
        "compensable": _compensable_linked_calls(incident) if can_operate else [],
    })


def _compensable_linked_calls(incident: Incident) -> list[ToolCall]:
    rolled_back = incident.tool_calls.filter(rollbacks__isnull=False).values("pk")
    return list(ToolCall.objects.filter(tenant_id=incident.tenant_id, status="succeeded",
                                        tool__supports_rollback=True)
                .filter(pk__in=incident.tool_calls.values("pk"))
                .exclude(pk__in=rolled_back).select_related("tool")[:100])


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


@login_required
@require_POST
def incident_act(request: HttpRequest, tenant: str, pk: int) -> HttpResponse:
    incident = _incident_or_404(request, tenant, pk)
    action, by, form = request.POST.get("action", ""), actor_of(request), request.POST
    try:
        if action == "note":
            services.add_note(incident, form.get("body", ""), by=by)
            done = "Note added."
        elif action == "link":
            versions = [int(v) for v in _split(form.get("policy_version_ids", "")) if v.isdigit()]
            replays = [int(v) for v in _split(form.get("replay_ids", "")) if v.isdigit()]
            linked = services.link_to_incident(
                incident, by=by, run_ids=_split(form.get("run_ids", "")),
                call_ids=_split(form.get("call_ids", "")), policy_version_ids=versions,
                replay_ids=replays, ticket_ids=_split(form.get("ticket_ids", "")))
            done = (f"Linked {len(linked.runs)} run(s), {len(linked.calls)} call(s), "
                    f"{len(linked.policy_versions)} policy version(s), "
                    f"{len(linked.replays)} replay(s), {len(linked.tickets)} ticket(s).")
            if linked.escalated_calls:
                done += (f" Escalated {len(linked.escalated_calls)} write/delete/exfil call(s) "
                         "to security and data owners.")
        elif action == "freeze":
            version = services.freeze_for_incident(incident, form.get("tool", ""), by=by,
                                                   mode=form.get("mode", "deny"))
            done = f"{form.get('tool')} frozen: {version.policy.name} v{version.number}."
        elif action == "rollback":
            done = _roll_back(incident, form, by=by)
        elif action == "mitigate":
            services.mark_mitigated(incident, by=by, note=form.get("note", ""))
            done = "Marked mitigated."
        elif action == "close":
            services.close_incident(incident, by=by,
                                    remediation_status=form.get("remediation_status", ""),
                                    note=form.get("note", ""))
            done = "Incident closed."
        else:
            raise services.IncidentError(f"unknown action {action!r}")
    except (PermissionDenied, ValidationError) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, text)
    else:
        messages.success(request, done)
    return redirect("incident-page", tenant=incident.tenant.slug, pk=incident.pk)


def _roll_back(incident: Incident, form: Any, *, by: Actor) -> str:
    from operations.rollback import request_rollback, request_run_rollback

    if form.get("run_id"):
        run = Run.objects.filter(tenant_id=incident.tenant_id, run_id=form["run_id"]).first()
        if run is None:
            raise services.IncidentError(f"no run {form['run_id']} in this tenant")
        rollbacks = request_run_rollback(run, by=by, incident=incident)
        return f"Rolling back {len(rollbacks)} call(s) of run {run.run_id}, latest first."
    call = ToolCall.objects.filter(tenant_id=incident.tenant_id,
                                   call_id=form.get("call_id", "")).first()
    if call is None:
        raise services.IncidentError(f"no tool call {form.get('call_id')!r} in this tenant")
    rollback, queued = request_rollback(call, by=by, incident=incident)
    return (f"Rollback {rollback.pk} of {call.call_id} queued." if queued else
            f"{call.call_id} was already rolled back (rollback {rollback.pk}: "
            f"{rollback.status}).")
