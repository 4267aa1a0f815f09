"""Incident operations: open, link, note, freeze, escalate, mitigate, close.

Every entry point (admin, page, API, CLI) calls these. Each change is one transaction that
writes its annotation (``data["incident"]`` = the incident's reference) on the run it concerns,
or on the tenant's governance log, so the incident's timeline is read straight from the ledger.
Acting on an incident needs the ``operate`` role on its tenant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from core.actors import Actor, label_of, person_of
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role
from operations.models import Replay
from policies.models import PolicyVersion
from runs.annotations import annotate
from runs.models import ActionClass, Annotation, AnnotationKind, Run, ToolCall

from .models import (
    CLOSING_REMEDIATIONS,
    Incident,
    IncidentStatus,
    Remediation,
    Severity,
)

# Calls that change or leak something: linking one escalates to security and data owners.
RISKY_CLASSES = (ActionClass.WRITE, ActionClass.DELETE, ActionClass.EXFIL)
ESCALATION_LIST_LIMIT = 200


class IncidentError(ValidationError):
    pass


def require_operate(tenant: Tenant | int, *, by: Actor) -> None:
    if not has_role(by, Role.OPERATE, tenant):
        raise PermissionDenied("acting on incidents needs the operate role on this tenant")


def _record(incident: Incident, body: str, *, by: Actor, event: str, run_id: str = "",
            target_call_id: str = "", kind: str = AnnotationKind.INCIDENT_LINK,
            **data: Any) -> Annotation:
    return annotate(incident.tenant, kind, body, run_id=run_id, by=by,
                    target_call_id=target_call_id,
                    data={"incident": incident.reference, "incident_id": incident.pk,
                          "event": event, **data})


@transaction.atomic
def open_incident(tenant: Tenant, title: str, *, by: Actor, severity: str = Severity.MEDIUM,
                  summary: str = "", ticket_ids: Iterable[str] = ()) -> Incident:
    require_operate(tenant, by=by)
    title = title.strip()
    if not title:
        raise IncidentError("an incident needs a title")
    if severity not in Severity.values:
        raise IncidentError(f"unknown severity {severity!r}; use {', '.join(Severity.values)}")
    incident = Incident.objects.create(
        tenant=tenant, title=title, summary=summary, severity=severity,
        ticket_ids=_clean_tickets(ticket_ids), opened_by=person_of(by),
        opened_by_label=label_of(by, default=""))
    _record(incident, f"opened {incident.reference} ({severity}): {title}", by=by, event="opened",
            severity=severity, ticket_ids=incident.ticket_ids)
    return incident


def _clean_tickets(ticket_ids: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for ticket in ticket_ids:
        ticket = str(ticket).strip()
        if ticket and ticket not in seen:
            seen.append(ticket)
    return seen


def _locked_open(incident: Incident) -> Incident:
    locked = Incident.objects.select_for_update(of=("self",)).select_related("tenant").get(
        pk=incident.pk)
    if locked.is_closed:
        raise IncidentError(f"{locked.reference} is closed")
    return locked


@dataclass
class Linked:
    """What a link request added (already-linked items are not repeated)."""

    runs: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    policy_versions: list[int] = field(default_factory=list)
    replays: list[int] = field(default_factory=list)
    tickets: list[str] = field(default_factory=list)
    escalated_calls: list[str] = field(default_factory=list)

    @property
    def anything(self) -> bool:
        return bool(self.runs or self.calls or self.policy_versions or self.replays
                    or self.tickets)


def _missing(asked: Iterable[str], found: Iterable[str], what: str) -> None:
    missing = sorted(set(asked) - set(found))
    if missing:
        raise IncidentError(f"no {what} {', '.join(map(str, missing))} in this tenant")


@transaction.atomic
def link_to_incident(incident: Incident, *, by: Actor, run_ids: Iterable[str] = (),
                     call_ids: Iterable[str] = (), policy_version_ids: Iterable[int] = (),
                     replay_ids: Iterable[int] = (), ticket_ids: Iterable[str] = ()) -> Linked:
    """Link runs, tool calls (by external id), policy versions and replays (by id) and
    tickets. Each new
    link is annotated on the run it concerns; linking write, delete or exfil calls (directly
    or through their run) escalates to security and data owners."""
    require_operate(incident.tenant_id, by=by)
    incident = _locked_open(incident)
    tenant = incident.tenant
    linked = Linked()

    run_ids, call_ids = sorted(set(run_ids)), sorted(set(call_ids))
    runs = list(Run.objects.filter(tenant=tenant, run_id__in=run_ids))
    _missing(run_ids, [r.run_id for r in runs], "run")
    calls = list(ToolCall.objects.filter(tenant=tenant, call_id__in=call_ids)
                 .select_related("run", "tool"))
    _missing(call_ids, [c.call_id for c in calls], "tool call")
    version_ids = sorted({int(v) for v in policy_version_ids})
    versions = list(PolicyVersion.objects.filter(tenant=tenant, pk__in=version_ids)
                    .select_related("policy"))
    _missing(map(str, version_ids), [str(v.pk) for v in versions], "policy version")
    replay_pks = sorted({int(r) for r in replay_ids})
    replays = list(Replay.objects.filter(tenant=tenant, pk__in=replay_pks).select_related("run"))
    _missing(map(str, replay_pks), [str(r.pk) for r in replays], "replay")

    already_runs = set(incident.runs.filter(pk__in=[r.pk for r in runs])
                       .values_list("pk", flat=True))
    for run in runs:
        if run.pk in already_runs:
            continue
        incident.runs.add(run)
        linked.runs.append(run.run_id)
        _record(incident, f"run linked to {incident.reference}: {incident.title}", by=by,
                event="linked_run", run_id=run.run_id, linked_run=run.run_id)
    already_calls = set(incident.tool_calls.filter(pk__in=[c.pk for c in calls])
                        .values_list("pk", flat=True))
    for call in calls:
        if call.pk in already_calls:
            continue
        incident.tool_calls.add(call)
        linked.calls.append(call.call_id)
        _record(incident, f"{call.tool.name} call ({call.action_class}) linked to "
                f"{incident.reference}: {incident.title}", by=by, event="linked_call",
                run_id=call.run.run_id, target_call_id=call.call_id, linked_call=call.call_id,
                action_class=call.action_class)
    already_versions = set(incident.policy_versions.values_list("pk", flat=True))
    for version in versions:
        if version.pk in already_versions:
            continue
        incident.policy_versions.add(version)
        linked.policy_versions.append(version.pk)
        _record(incident, f"policy {version.policy.name} v{version.number} linked to "
                f"{incident.reference}", by=by, event="linked_policy_version",
                policy=version.policy.name, version=version.number,
                policy_version_id=version.pk)
    already_replays = set(incident.replays.values_list("pk", flat=True))
    for replay in replays:
        if replay.pk in already_replays:
            continue
        incident.replays.add(replay)
        linked.replays.append(replay.pk)
        _record(incident, f"{replay.mode} replay {replay.pk} of this run linked to "
                f"{incident.reference}", by=by, event="linked_replay", run_id=replay.run.run_id,
                replay=replay.pk)
    new_tickets = [t for t in _clean_tickets(ticket_ids) if t not in incident.ticket_ids]
    if new_tickets:
        incident.ticket_ids = [*incident.ticket_ids, *new_tickets]
        incident.save(update_fields=["ticket_ids"])
        linked.tickets = new_tickets
        _record(incident, f"tickets {', '.join(new_tickets)} recorded on {incident.reference}",
                by=by, event="linked_tickets", ticket_ids=new_tickets)
    if linked.runs or linked.calls:
        linked.escalated_calls = escalate_if_risky(incident, by=by)
    return linked


def risky_calls(incident: Incident) -> QuerySet[ToolCall]:
    """The write, delete and exfil calls the incident involves: linked, or in a linked run."""
    return ToolCall.objects.filter(tenant_id=incident.tenant_id,
                                   action_class__in=RISKY_CLASSES).filter(
        Q(pk__in=incident.tool_calls.values("pk")) | Q(run__in=incident.runs.values("pk")))


def escalate_if_risky(incident: Incident, *, by: Actor) -> list[str]:
    """Tell security and data owners about write/delete/exfil calls not reported yet, and
    record in the ledger who was told, how, and whether it was delivered."""
    from .content import shown_content
    from .notify import contacts_for, notifier

    new = list(risky_calls(incident).exclude(call_id__in=incident.escalated_call_ids)
               .order_by("id").values_list("call_id", "action_class", "tool__name",
                                           "run__run_id")[:ESCALATION_LIST_LIMIT])
    if not new:
        return []
    contacts = contacts_for(incident.tenant)
    classes = sorted({action for _, action, _, _ in new})
    content = shown_content(incident)  # an e-mail or a webhook leaves the portal: strict
    facts = {"incident": incident.reference, "incident_id": incident.pk,
             "tenant": incident.tenant.slug, "title": content["title"],
             "severity": incident.severity, "ticket_ids": content["ticket_ids"],
             "action_classes": classes,
             "calls": [{"call_id": c, "action_class": a, "tool": t, "run_id": r}
                       for c, a, t, r in new]}
    delivery = notifier().notify("escalated", facts, contacts)
    called = [c for c, _, _, _ in new]
    incident.escalated_call_ids = [*incident.escalated_call_ids, *called]
    incident.last_escalated_at = timezone.now()
    incident.save(update_fields=["escalated_call_ids", "last_escalated_at"])
    outcome = "notified" if delivery.delivered else "could not notify"
    _record(incident, f"escalated: {outcome} security and data owners ({delivery.channel}) of "
            f"{len(called)} {'/'.join(classes)} call(s)", by=by, event="escalated",
            calls=called, action_classes=classes, security=contacts.security,
            data_owners=contacts.data_owners, delivery=delivery.as_dict())
    return called


EDITABLE = ("title", "severity", "summary", "ticket_ids")


@transaction.atomic
def edit_incident(incident: Incident, *, by: Actor, **changes: Any) -> Incident:
    """Change an incident's title, severity, summary or tickets; the change is annotated."""
    require_operate(incident.tenant_id, by=by)
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise IncidentError(f"{', '.join(sorted(unknown))} cannot be edited; use the actions")
    stored = _locked_open(incident)
    if "ticket_ids" in changes:
        changes["ticket_ids"] = _clean_tickets(changes["ticket_ids"])
    if changes.get("severity", stored.severity) not in Severity.values:
        raise IncidentError(f"unknown severity {changes['severity']!r}")
    before = {name: getattr(stored, name) for name in changes}
    changed = {name: value for name, value in changes.items() if before[name] != value}
    if not changed:
        return stored
    for name, value in changed.items():
        setattr(stored, name, value)
    stored.save(update_fields=list(changed))
    _record(stored, f"{stored.reference} edited: {', '.join(sorted(changed))}", by=by,
            event="edited", before={k: before[k] for k in changed}, after=changed)
    return stored


@transaction.atomic
def add_note(incident: Incident, body: str, *, by: Actor) -> Annotation:
    require_operate(incident.tenant_id, by=by)
    body = body.strip()
    if not body:
        raise IncidentError("a note needs some text")
    incident = Incident.objects.select_related("tenant").get(pk=incident.pk)
    return _record(incident, body, by=by, event="note", kind=AnnotationKind.NOTE)


@transaction.atomic
def freeze_for_incident(incident: Incident, tool: str, *, by: Actor, mode: str = "deny"
                        ) -> PolicyVersion:
    """Freeze a tool for this incident: the published freeze version records the incident
    (its change note and annotation) and the incident lists the version."""
    from policies.services import freeze_tool

    require_operate(incident.tenant_id, by=by)
    incident = _locked_open(incident)
    version = freeze_tool(incident.tenant, tool, by=by, mode=mode, incident=incident.reference)
    incident.policy_versions.add(version)
    return version


@transaction.atomic
def mark_mitigated(incident: Incident, *, by: Actor, note: str = "") -> Incident:
    require_operate(incident.tenant_id, by=by)
    incident = _locked_open(incident)
    if incident.status == IncidentStatus.MITIGATED:
        raise IncidentError(f"{incident.reference} is already mitigated")
    incident.status, incident.mitigated_at = IncidentStatus.MITIGATED, timezone.now()
    if incident.remediation_status == Remediation.NONE:
        incident.remediation_status = Remediation.IN_PROGRESS
    incident.save(update_fields=["status", "mitigated_at", "remediation_status"])
    _record(incident, f"{incident.reference} mitigated" + (f": {note}" if note else ""), by=by,
            event="mitigated", note=note)
    return incident


@transaction.atomic
def close_incident(incident: Incident, *, by: Actor, remediation_status: str, note: str = ""
                   ) -> Incident:
    """Close with a clear remediation status (the runbook's "Finality"); the final annotation
    sums up what the incident links."""
    require_operate(incident.tenant_id, by=by)
    if remediation_status not in CLOSING_REMEDIATIONS:
        raise IncidentError("closing an incident needs a remediation status: one of "
                            + ", ".join(CLOSING_REMEDIATIONS))
    incident = _locked_open(incident)
    incident.status, incident.remediation_status = IncidentStatus.CLOSED, remediation_status
    incident.closed_at, incident.closed_by = timezone.now(), person_of(by)
    incident.save(update_fields=["status", "remediation_status", "closed_at", "closed_by"])
    summary = incident_summary(incident)
    _record(incident, f"closed {incident.reference} ({remediation_status})"
            + (f": {note}" if note else ""), by=by, event="closed",
            remediation_status=remediation_status, note=note, summary=summary)
    return incident


def incident_summary(incident: Incident) -> dict[str, Any]:
    """The ledger links of an incident, as its final annotation and the API report them."""
    return {
        "runs": sorted(incident.runs.values_list("run_id", flat=True)),
        "tool_calls": sorted(incident.tool_calls.values_list("call_id", flat=True)),
        "policy_versions": [f"{name} v{number}" for name, number in
                            incident.policy_versions.order_by("policy__name", "number")
                            .values_list("policy__name", "number")],
        "rollbacks": [{"call_id": call_id, "status": status} for call_id, status in
                      incident.rollbacks.order_by("id").values_list("tool_call__call_id",
                                                                    "status")],
        "replays": [{"replay": pk, "run_id": run_id, "mode": mode, "status": status,
                     "divergent_steps": divergent} for pk, run_id, mode, status, divergent in
                    incident.replays.order_by("id").values_list(
                        "pk", "run__run_id", "mode", "status", "divergent_steps")],
        "ticket_ids": incident.ticket_ids,
        "escalated_calls": incident.escalated_call_ids,
    }


def incident_timeline(incident: Incident) -> QuerySet[Annotation]:
    """Every annotation about the incident, in the order they were written."""
    return (Annotation.objects.filter(tenant_id=incident.tenant_id,
                                      data__incident=incident.reference)
            .select_related("run").order_by("recorded_at", "id"))
