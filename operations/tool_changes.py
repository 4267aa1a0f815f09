"""A tool's connection is a governed change: four eyes before it takes effect.

Where the portal sends a tool's calls and which credential goes with them
(``GOVERNED_TOOL_FIELDS``: connector, endpoint, stdio server, compensate endpoint, secret
reference) decides what leaves the platform, and which allowlisted program gets the
credential. Whoever sets them (admin change or add page, history revert) only *proposes*: the
tool keeps its confirmed values, and another holder of manage_policies on the tenant confirms
(the change must still be valid then) or rejects. Each step is annotated in the tenant's
governance log in the same transaction.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from core.actors import Actor, is_person, person_of
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.models import GOVERNED_TOOL_FIELDS, AnnotationKind, Tool, ToolChange, ToolChangeStatus


def governed_changes(tool: Tool) -> dict[str, Any]:
    """The governed fields whose value on ``tool`` (in memory) differs from the stored one."""
    if tool.pk is None:
        blank = Tool()
        return {f: getattr(tool, f) for f in GOVERNED_TOOL_FIELDS
                if getattr(tool, f) != getattr(blank, f)}
    stored = Tool.objects.filter(pk=tool.pk).values(*GOVERNED_TOOL_FIELDS).get()
    return {f: getattr(tool, f) for f in GOVERNED_TOOL_FIELDS if getattr(tool, f) != stored[f]}


def keep_confirmed(tool: Tool) -> dict[str, Any]:
    """Take the governed changes off ``tool`` (in memory), back to the confirmed values (the
    defaults for a new tool); answer what was taken off, for ``propose_tool_change``."""
    changes = governed_changes(tool)
    confirmed = (Tool.objects.filter(pk=tool.pk).values(*GOVERNED_TOOL_FIELDS).get()
                 if tool.pk is not None else {f: getattr(Tool(), f) for f in changes})
    for field in changes:
        setattr(tool, field, confirmed[field])
    return changes


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{field}={value!r}" for field, value in sorted(values.items()))


def _require_manager(tool: Tool, what: str, *, by: Actor) -> None:
    if not has_role(by, Role.MANAGE_POLICIES, tool.tenant_id):
        raise PermissionDenied(f"{what} a tool's connection needs the manage_policies role on "
                               "its tenant")


@transaction.atomic
def propose_tool_change(tool: Tool, changes: dict[str, Any], *, by: Actor) -> ToolChange | None:
    """Record ``changes`` of ``tool``'s governed fields as pending (replacing any pending
    proposal for the tool); None when nothing governed changes."""
    changes = {f: v for f, v in changes.items() if f in GOVERNED_TOOL_FIELDS}
    if not changes:
        return None
    _require_manager(tool, "changing", by=by)
    candidate = Tool.objects.get(pk=tool.pk)
    for field, value in changes.items():
        setattr(candidate, field, value)
    candidate.full_clean(exclude=["tenant", "name"])  # a proposal must be valid to confirm
    locked = Tool.objects.select_for_update(no_key=True).get(pk=tool.pk)
    ToolChange.objects.filter(tool=locked, status=ToolChangeStatus.PENDING).update(
        status=ToolChangeStatus.SUPERSEDED, decided_at=timezone.now())
    previous = {field: getattr(locked, field) for field in changes}
    change = ToolChange.objects.create(
        tenant_id=locked.tenant_id, tool=locked, proposed=changes, previous=previous,
        proposed_by=person_of(by))
    annotate(locked.tenant, AnnotationKind.POLICY_CHANGE,
             f"Tool {locked.name}: connection change {change.pk} proposed "
             f"({_describe(changes)}); it takes effect once another manager confirms it.",
             by=by, data={"event": "tool_connection_proposed", "tool": locked.name,
                          "change": change.pk, "proposed": changes, "previous": previous})
    return change


def _pending(change: ToolChange) -> ToolChange:
    locked = ToolChange.objects.select_for_update(of=("self",)).select_related("tool__tenant").get(
        pk=change.pk)
    if locked.status != ToolChangeStatus.PENDING:
        raise ValidationError(f"connection change {locked.pk} is {locked.status}, not pending")
    return locked


@transaction.atomic
def confirm_tool_change(change: ToolChange, *, by: Actor) -> Tool:
    """Apply a pending change: only another manage_policies holder than its proposer, and only
    while the tool still has the values the proposal was made against."""
    _require_manager(change.tool, "confirming a change of", by=by)
    change = _pending(change)
    if is_person(by, change.proposed_by_id):
        raise PermissionDenied("a connection change needs a second person: its proposer "
                               "cannot confirm it")
    tool = Tool.objects.select_for_update(no_key=True).get(pk=change.tool_id)
    current = {field: getattr(tool, field) for field in change.previous}
    if current != change.previous:
        raise ValidationError(f"the tool changed since change {change.pk} was proposed; "
                              "propose it again")
    for field, value in change.proposed.items():
        setattr(tool, field, value)
    # Still valid now: the platform's stdio allowlist may have lost the server since.
    tool.full_clean(exclude=["tenant", "name"])
    tool._history_user = by  # type: ignore[attr-defined]
    tool._change_reason = f"connection change {change.pk} confirmed"  # type: ignore[attr-defined]
    tool.save()
    change.status, change.decided_by, change.decided_at = (
        ToolChangeStatus.CONFIRMED, person_of(by), timezone.now())
    change.save(update_fields=["status", "decided_by", "decided_at"])
    annotate(tool.tenant, AnnotationKind.POLICY_CHANGE,
             f"Tool {tool.name}: connection change {change.pk} confirmed "
             f"({_describe(change.proposed)}); proposed by {change.proposed_by}.",
             by=by, data={"event": "tool_connection_confirmed", "tool": tool.name,
                          "change": change.pk, "proposed": change.proposed,
                          "previous": change.previous})
    return tool


@transaction.atomic
def reject_tool_change(change: ToolChange, *, by: Actor) -> ToolChange:
    """Drop a pending change (any manage_policies holder, its proposer included)."""
    _require_manager(change.tool, "rejecting a change of", by=by)
    change = _pending(change)
    change.status, change.decided_by, change.decided_at = (
        ToolChangeStatus.REJECTED, person_of(by), timezone.now())
    change.save(update_fields=["status", "decided_by", "decided_at"])
    annotate(change.tool.tenant, AnnotationKind.POLICY_CHANGE,
             f"Tool {change.tool.name}: connection change {change.pk} rejected.", by=by,
             data={"event": "tool_connection_rejected", "tool": change.tool.name,
                   "change": change.pk, "proposed": change.proposed})
    return change


__all__ = ["confirm_tool_change", "governed_changes", "keep_confirmed", "propose_tool_change",
           "reject_tool_change"]
