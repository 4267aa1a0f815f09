"""Domain operations on the ledger; every entry point (API, admin, pages, CLI, tasks) calls
these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db.models import Q, QuerySet

from ledger_portal.roles import Role
from ledger_portal.tenancy import has_role

from .ingest import BatchConflict, BatchInvalid, BatchRejected, IngestResult, ingest_batch
from .models import Agent, RedactionRule, Run
from .redaction import LEVELS, Redactor, TenantRule

__all__ = ["BatchConflict", "BatchInvalid", "BatchRejected", "IngestResult",
           "RedactionNotAllowed", "ViewerRedaction", "find_runs", "ingest_batch",
           "redactor_for"]


def find_runs(user: Any, query: str, tenant_slug: str | None = None) -> QuerySet[Run]:
    """Runs of the user's tenants matching a run_id, an agent_id or a trigger reference."""
    query = query.strip()
    runs = Run.objects.for_user(user, Role.VIEW_LEDGER)
    if tenant_slug:
        runs = runs.filter(tenant__slug=tenant_slug)
    agents = Agent.objects.for_user(user, Role.VIEW_LEDGER).filter(agent_id=query).values("pk")
    return (runs.filter(Q(run_id=query) | Q(trigger_ref=query) | Q(agent_id__in=agents))
            .select_related("tenant", "agent").order_by("-id"))


# What of each kind of record a reader sees only through redaction.
REDACTED_FIELDS = {
    "run": ("goal", "metadata"),
    "step": ("title", "metadata"),
    "model_call": ("messages", "response", "error"),
    "tool_call": ("input", "output", "error"),
    "annotation": ("body", "data"),
}
# The role that lets a reader ask for each level; strict needs none.
LEVEL_ROLES = {"strict": None, "standard": Role.VIEW_CONFIDENTIAL, "none": Role.VIEW_UNREDACTED}


class RedactionNotAllowed(PermissionDenied):
    pass


@dataclass
class ViewerRedaction:
    level: str
    redactor: Redactor

    def redact_row(self, kind: str, row: dict[str, Any]) -> dict[str, Any]:
        return self.redactor.redact_fields(row, REDACTED_FIELDS[kind], row.get("classifications"))


def allowed_levels(user: Any, tenant_id: int) -> list[str]:
    allowed = ["strict"]
    if has_role(user, Role.VIEW_CONFIDENTIAL, tenant_id) or has_role(
            user, Role.VIEW_UNREDACTED, tenant_id):
        allowed.append("standard")
    if has_role(user, Role.VIEW_UNREDACTED, tenant_id):
        allowed.append("none")
    return allowed


def redactor_for(user: Any, tenant_id: int, requested: str | None = None) -> ViewerRedaction:
    """The redaction a reader gets on one tenant: strict unless they ask for, and hold the
    role for, a lighter level."""
    level = requested or "strict"
    if level not in LEVELS:
        raise RedactionNotAllowed(f"unknown redaction level {level!r}; use one of "
                                  f"{', '.join(LEVELS)}")
    role = LEVEL_ROLES[level]
    if role is not None and level not in allowed_levels(user, tenant_id):
        raise RedactionNotAllowed(f"redaction level {level!r} needs the {role} role")
    rules = [TenantRule(pattern, label) for pattern, label in RedactionRule.objects.filter(
        tenant_id=tenant_id).values_list("pattern", "label")]
    return ViewerRedaction(level, Redactor(level, rules))
