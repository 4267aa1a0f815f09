"""Following up a replay's divergences: a flagged step is open until a person queues it for
fuzz testing, calls it expected, or marks it fixed. Every decision is a ledger annotation on the
replayed run, written in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.actors import Actor, Viewer, label_of, person_of
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.models import AnnotationKind

from .models import FollowUp, ReplayStep


class FollowUpRefused(ValidationError):
    """A follow-up that cannot be recorded (the message says why)."""


@transaction.atomic
def set_divergence_follow_up(step: ReplayStep, *, by: Actor, state: str,
                             note: str = "") -> ReplayStep:
    """Record what is done about a flagged (divergent) step, annotated on the replayed run.

    Needs the operate role on the step's tenant; ``expected`` needs a note saying why."""
    if not has_role(by, Role.OPERATE, step.tenant_id):
        raise PermissionDenied("following up a divergence needs the operate role on this tenant")
    note = (note or "").strip()
    if state not in FollowUp.values:
        raise FollowUpRefused(f"unknown follow-up state {state!r}; use one of "
                              + ", ".join(FollowUp.values))
    step = ReplayStep.objects.select_for_update(of=("self",)).select_related(
        "replay__run", "replay__tenant", "tool").get(pk=step.pk)
    if not step.flagged:
        raise FollowUpRefused(f"step {step.seq} of replay {step.replay_id} did not diverge "
                              "(it is not flagged): there is nothing to follow up")
    if state == FollowUp.EXPECTED and not note:
        raise FollowUpRefused("marking a divergence expected needs a note saying why it is "
                              "not an issue")
    previous = step.follow_up or FollowUp.OPEN
    if state == previous:
        raise FollowUpRefused(f"step {step.seq} of replay {step.replay_id} is already "
                              f"{state}")
    user = person_of(by)
    step.follow_up, step.follow_up_note = state, note
    step.follow_up_by, step.follow_up_by_label = user, label_of(by)
    step.follow_up_at = timezone.now()
    step.save(update_fields=["follow_up", "follow_up_note", "follow_up_by",
                             "follow_up_by_label", "follow_up_at", "updated_at"])
    replay = step.replay
    annotate(replay.tenant, AnnotationKind.REPLAY,
             f"replay {replay.pk} step {step.seq} ({step.tool.name}, {step.call_id}): "
             f"divergence {previous} -> {state}" + (f": {note}" if note else ""),
             run_id=replay.run.run_id, by=by, target_call_id=step.call_id,
             data={"replay": replay.pk, "event": "divergence_follow_up", "seq": step.seq,
                   "call_id": step.call_id, "tool": step.tool.name, "previous": previous,
                   "state": state, "note": note})
    return step


def divergences_for(user: Viewer, *, state: str | None = FollowUp.OPEN,
                    tenant: str | None = None, tool: str | None = None
                    ) -> QuerySet[ReplayStep]:
    """Flagged steps across the replays of the user's tenants, newest first; ``state`` None
    lists them in every state."""
    steps = ReplayStep.objects.for_user(user, Role.VIEW_LEDGER).filter(flagged=True)
    if state:
        steps = steps.filter(follow_up=state)
    if tenant:
        steps = steps.filter(tenant__slug=tenant)
    if tool:
        steps = steps.filter(tool__name=tool)
    return steps.select_related("tenant", "tool", "replay__run").order_by("-id")


def follow_up_of(step: ReplayStep) -> dict[str, Any] | None:
    """A flagged step's follow-up as the pages, the API and the reports show it."""
    if not step.flagged:
        return None
    return {"state": step.follow_up or FollowUp.OPEN, "by": step.follow_up_by_label or None,
            "at": step.follow_up_at, "note": step.follow_up_note}
