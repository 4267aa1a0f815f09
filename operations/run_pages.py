"""What operations add to a run's timeline page: its latest replays and the replay form's
policy versions, each call's rollback (who asked, when, what remains), roll back buttons on
compensable calls, and the endpoint they post to."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.actors import actor_of
from core.roles import Role
from core.tenancy import has_role
from policies.models import PolicyVersion
from runs.models import Run, ToolCall
from runs.redaction import as_text
from runs.services import ViewerRedaction
from runs.timeline_html import RollbackControls, RollbackState
from runs.views import visible_run_or_404

from .models import Replay, Rollback
from .rollback import compensable_calls, request_rollback, request_run_rollback


def timeline_panel(request: HttpRequest, tenant: str, run: dict[str, Any],
                   redaction: ViewerRedaction) -> dict[str, Any]:
    """Registered with ``runs.timeline_panels`` by ``OperationsConfig.ready``."""
    can_operate = has_role(request.user, Role.OPERATE, run["tenant_id"])
    context: dict[str, Any] = {
        "replays": list(Replay.objects.filter(tenant_id=run["tenant_id"], run_id=run["id"])
                        .order_by("-id")[:10]),
        "can_replay": can_operate,
        "rollbacks": _rollback_controls(request, tenant, run, redaction, can_operate),
    }
    if can_operate:
        context["policy_versions"] = list(PolicyVersion.objects.filter(
            tenant_id=run["tenant_id"]).exclude(status="draft").select_related("policy")
            .order_by("policy__name", "-number")[:50])
    return context


def _rollback_controls(request: HttpRequest, tenant: str, run: dict[str, Any],
                       redaction: ViewerRedaction, can_operate: bool) -> RollbackControls:
    """Each call's rollback, for every reader (what remains redacted at their level); roll
    back buttons for operators: on completed calls whose tool supports compensation that were
    not rolled back yet, or whose rollback stopped before its hook was called (a retry)."""
    done = {row["tool_call__call_id"]: _state(row, redaction) for row in Rollback.objects.filter(
        tenant_id=run["tenant_id"], run_id=run["id"]).values(
        "pk", "tool_call__call_id", "status", "attempts", "requested_by_label", "created_at",
        "remaining_side_effects", "last_error")}
    if not can_operate:
        return RollbackControls(None, "", set(), done)
    stored = Run(pk=run["id"], tenant_id=run["tenant_id"])
    eligible = {call_id for call_id in compensable_calls(stored).values_list("call_id", flat=True)
                if call_id not in done or done[call_id].never_attempted}
    return RollbackControls(reverse("run-rollback", args=[tenant, run["run_id"]]),
                            get_token(request), eligible, done)


def _state(row: Mapping[str, Any], redaction: ViewerRedaction) -> RollbackState:
    # the hook's answer is the tool's content: redacted like the API's rollback (ANSWER_FIELDS)
    shown = redaction.redactor.redact_fields(row, ("remaining_side_effects", "last_error"))
    remaining = shown["remaining_side_effects"] or []
    return RollbackState(
        rollback_id=row["pk"], status=row["status"], attempts=row["attempts"],
        requested_by=row["requested_by_label"], requested_at=row["created_at"],
        link=reverse("admin:operations_rollback_change", args=[row["pk"]]),
        remaining=remaining if isinstance(remaining, list) else [remaining],
        last_error=as_text(shown["last_error"]))


@login_required
@require_POST
def run_rollback(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    """The timeline's buttons: roll back one call (``call_id``) or the whole run."""
    run = visible_run_or_404(request.user, tenant, run_id)
    call_id = request.POST.get("call_id", "")
    try:
        if call_id:
            call = ToolCall.objects.filter(tenant_id=run.tenant_id, run=run,
                                           call_id=call_id).first()
            if call is None:
                raise Http404("No such call in this run.")
            rollback, queued = request_rollback(call, by=actor_of(request))
            messages.success(request, f"Rollback of {call_id} queued." if queued else
                             f"{call_id} was already rolled back ({rollback.status}).")
        else:
            rollbacks = request_run_rollback(run, by=actor_of(request))
            messages.success(request, f"Rolling back {len(rollbacks)} call(s), latest first.")
    except (PermissionDenied, ValidationError) as exc:
        messages.error(request, " ".join(exc.messages) if isinstance(exc, ValidationError)
                       else str(exc))
    return redirect(reverse("run-timeline", args=[tenant, run_id]))
