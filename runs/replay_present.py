"""Replays as people and clients see them: redacted at the reader's level, like the ledger."""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse

from .models import Replay, ReplayStep, ToolCall
from .services import ViewerRedaction

_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def _redact_at(view: ViewerRedaction, labels: dict[str, str], path: str, value: Any) -> Any:
    """Redact a value found at ``path`` of an output, as it would be redacted in place."""
    from .replay_redaction import redact_at

    return redact_at(view.redactor, labels, path, value)


def step_rows(replay: Replay, view: ViewerRedaction) -> list[dict[str, Any]]:
    steps = list(ReplayStep.objects.filter(replay=replay).select_related(
        "tool", "decision__policy_version__policy").order_by("seq"))
    labels = dict(ToolCall.objects.filter(
        tenant_id=replay.tenant_id, call_id__in=[s.call_id for s in steps]).values_list(
        "call_id", "classifications"))
    rows = []
    for step in steps:
        call_labels = labels.get(step.call_id) or {}
        decision = step.decision
        rows.append({
            "seq": step.seq, "call_id": step.call_id, "step_index": step.step_index,
            "tool": step.tool.name, "mode_used": step.mode_used, "status": step.status,
            "attempts": step.attempts, "idempotency_key": step.idempotency_key,
            "latency_ms": step.latency_ms, "error": step.error, "flagged": step.flagged,
            "output": view.redactor.redact(step.output, "output", call_labels),
            "decision": None if decision is None else {
                "id": decision.pk, "effect": decision.effect, "reason": decision.reason,
                "policy_version": str(decision.policy_version)
                if decision.policy_version else None},
            "divergence": [{**d, "recorded": _redact_at(view, call_labels, d["path"],
                                                         d["recorded"]),
                            "replayed": _redact_at(view, call_labels, d["path"],
                                                   d["replayed"])}
                           for d in step.divergence or []],
        })
    return rows


def replay_summary(replay: Replay) -> dict[str, Any]:
    return {
        "id": replay.pk, "tenant": replay.tenant.slug, "run_id": replay.run.run_id,
        "mode": replay.mode, "until_step": replay.until_step, "status": replay.status,
        "policy_version": None if replay.policy_version is None else {
            "id": replay.policy_version.pk, "policy": replay.policy_version.policy.name,
            "version": replay.policy_version.number},
        "progress": {"steps_done": replay.steps_done, "steps_total": replay.steps_total,
                     "percent": replay.percent},
        "divergent_steps": replay.divergent_steps, "failure_reason": replay.failure_reason,
        "requested_by": replay.requested_by_label,
        "approval": None if replay.approval_id is None else {
            "id": replay.approval_id, "kind": replay.approval.kind if replay.approval else "",
            "status": replay.approval.status if replay.approval else "",
            "poll": reverse("api:approval-detail", args=[replay.approval_id])},
        "created_at": replay.created_at, "started_at": replay.started_at,
        "finished_at": replay.finished_at,
        "page": reverse("replay-detail", args=[replay.tenant.slug, replay.pk]),
    }


REPLAY_RELATED = ("tenant", "run", "policy_version__policy", "approval")


def redacted_divergence_report(replay: Replay, view: ViewerRedaction) -> dict[str, Any]:
    """The divergence report with its values redacted at the reader's level."""
    from .replay import divergence_report

    report = divergence_report(replay)
    flagged = {row["seq"]: row for row in step_rows(replay, view) if row["flagged"]}
    for step in report["divergent_steps"]:
        step["differences"] = flagged[step["seq"]]["divergence"]
    report["redaction"] = view.level
    return report
