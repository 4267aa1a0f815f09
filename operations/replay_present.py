"""Replays as people and clients see them: redacted at the reader's level, like the ledger."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from django.urls import reverse

from core.actors import Viewer
from policies.models import Decision
from policies.trail import deciding_rule
from runs.models import ToolCall
from runs.redaction import as_text
from runs.services import ViewerRedaction, redactor_for

from .divergences import follow_up_of
from .models import Replay, ReplayStep

_PART = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")


def _redact_at(view: ViewerRedaction, labels: dict[str, str], path: str, value: Any) -> Any:
    """Redact a value found at ``path`` of an output, as it would be redacted in place."""
    from .replay_redaction import redact_at

    return redact_at(view.redactor, labels, path, value)


def redacted_follow_up(step: ReplayStep, view: ViewerRedaction) -> dict[str, Any] | None:
    """The follow-up of a flagged step, its note redacted like an annotation's body."""
    follow_up = follow_up_of(step)
    if follow_up and follow_up["note"]:
        follow_up["note"] = view.redactor.redact(follow_up["note"], "body")
    return follow_up


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
            "attempts": step.attempts,
            "idempotency_key": as_text(view.redactor.redact(
                step.idempotency_key, "idempotency_key", call_labels)),
            "latency_ms": step.latency_ms, "flagged": step.flagged,
            # a tool's error can quote its answer: redacted like the output it stands for
            "error": view.redactor.redact(step.error, "error", call_labels),
            "follow_up": redacted_follow_up(step, view),
            "output": view.redactor.redact(step.output, "output", call_labels),
            "decision": None if decision is None else _decision(decision),
            "divergence": _redacted_differences(step, view, call_labels),
        })
    return rows


def _decision(decision: Decision) -> dict[str, Any]:
    """A replayed call's decision as the replay's trail shows it: the rule that decided, the
    policy version, the mode, the reason."""
    version = decision.policy_version
    return {"id": decision.pk, "effect": decision.effect, "reason": decision.reason,
            "mode": decision.mode, "policy_version": str(version) if version else None,
            "rule": deciding_rule(decision.matched_rules, version.policy.name if version else None,
                                  version.number if version else None)}


def _redacted_differences(step: ReplayStep, view: ViewerRedaction,
                          call_labels: dict[str, str]) -> list[dict[str, Any]]:
    return [{**d, "recorded": _redact_at(view, call_labels, d["path"], d["recorded"]),
             "replayed": _redact_at(view, call_labels, d["path"], d["replayed"])}
            for d in step.divergence or []]


def divergence_rows(steps: Iterable[ReplayStep], user: Viewer) -> list[dict[str, Any]]:
    """Flagged steps of any of the reader's tenants (``tenant``, ``tool`` and ``replay__run``
    selected), their differences redacted strictly: lists reach across replays."""
    steps = list(steps)
    labels = {(t, c): lab or {} for t, c, lab in ToolCall.objects.filter(
        tenant_id__in={s.tenant_id for s in steps}, call_id__in={s.call_id for s in steps}
    ).values_list("tenant_id", "call_id", "classifications")}
    views: dict[int, ViewerRedaction] = {}
    rows = []
    for step in steps:
        view = views.get(step.tenant_id) or views.setdefault(
            step.tenant_id, redactor_for(user, step.tenant_id))
        rows.append({
            "id": step.pk, "tenant": step.tenant.slug, "replay": step.replay_id,
            "run_id": step.replay.run.run_id, "seq": step.seq, "call_id": step.call_id,
            "tool": step.tool.name, "mode_used": step.mode_used, "status": step.status,
            "error": view.redactor.redact(step.error, "error", labels.get(
                (step.tenant_id, step.call_id), {})),
            "created_at": step.created_at,
            "differences": _redacted_differences(
                step, view, labels.get((step.tenant_id, step.call_id), {})),
            "follow_up": redacted_follow_up(step, view),
            "page": reverse("replay-detail", args=[step.tenant.slug, step.replay_id])
            + f"#step-{step.seq}",
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
        step["follow_up"] = flagged[step["seq"]]["follow_up"]
        step["error"] = flagged[step["seq"]]["error"]
    report["redaction"] = view.level
    return report
