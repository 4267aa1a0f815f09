"""What operations add to a run's timeline page: its latest replays and the replay form's
policy versions, roll back buttons on compensable calls, and the endpoint they post to."""

from __future__ import annotations

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
from runs.timeline_html import RollbackControls
from runs.views import visible_run_or_404

from .models import Replay, Rollback
from .rollback import compensable_calls, request_rollback, request_run_rollback


def timeline_panel(request: HttpRequest, tenant: str, run: dict[str, Any]) -> dict[str, Any]:
    """Registered with ``runs.timeline_panels`` by ``OperationsConfig.ready``."""
    can_operate = has_role(request.user, Role.OPERATE, run["tenant_id"])
    context: dict[str, Any] = {
        "replays": list(Replay.objects.filter(tenant_id=run["tenant_id"], run_id=run["id"])
                        .order_by("-id")[:10]),
        "can_replay": can_operate,
        "rollbacks": _rollback_controls(request, tenant, run) if can_operate else None,
    }
    if can_operate:
        context["policy_versions"] = list(PolicyVersion.objects.filter(
            tenant_id=run["tenant_id"]).exclude(status="draft").select_related("policy")
            .order_by("policy__name", "-number")[:50])
    return context


def _rollback_controls(request: HttpRequest, tenant: str, run: dict[str, Any]
                       ) -> RollbackControls:
    """Roll back buttons for operators: on completed calls whose tool supports compensation
    and that were not rolled back yet (those show their rollback's status instead)."""
    stored = Run(pk=run["id"], tenant_id=run["tenant_id"])
    done = dict(Rollback.objects.filter(tenant_id=run["tenant_id"], run_id=run["id"])
                .values_list("tool_call__call_id", "status"))
    eligible = set(compensable_calls(stored).values_list("call_id", flat=True)) - set(done)
    return RollbackControls(reverse("run-rollback", args=[tenant, run["run_id"]]),
                            get_token(request), eligible, done)


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
