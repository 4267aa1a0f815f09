"""The policy trail of recorded tool calls, for the ledger's run views: governance registers
it with ``runs.api.presenters`` (``PoliciesConfig.ready``), so the ledger shows what was decided
about each call without importing governance."""

from __future__ import annotations

from typing import Any

from django.db.models import F

from .models import Decision


def decisions_by_call(tenant_id: int, call_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """call_id -> its decisions, oldest first (taken before the call was recorded, linked to it
    by call_id; a replay's own decisions are the replay's trail, not the run's). One query."""
    found: dict[str, list[dict[str, Any]]] = {}
    rows = (Decision.objects.filter(tenant_id=tenant_id, call_id__in=call_ids,
                                    replay__isnull=True)
            .order_by("id").values("id", "call_id", "effect", "reason", "mode", "created_at",
                                   "approval_id", "exception_id",
                                   policy=F("policy_version__policy__name"),
                                   version=F("policy_version__number")))
    for row in rows:
        found.setdefault(row.pop("call_id"), []).append(row)
    return found
