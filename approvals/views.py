"""The approver queue: pending requests of the approver's tenants, riskiest and oldest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.actors import actor_of
from core.roles import Role
from runs.models import Run
from runs.services import redactor_for

from .models import ApprovalRequest, Status
from .services import caused_by, decide_approval

RECENTLY_DECIDED = 20
RISK = Case(When(action_class="exfil", then=Value(0)), When(action_class="delete", then=Value(1)),
            When(action_class="write", then=Value(2)), default=Value(3),
            output_field=IntegerField())


@dataclass
class QueueItem:
    """A pending request as the queue shows it (attributes fall through to the request)."""

    request: ApprovalRequest
    shown_arguments: Any
    run: Run | None
    own: str  # how the viewer caused the request (they cannot decide it), or ""
    shown_goal: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.request, name)


@login_required
def approval_queue(request: HttpRequest) -> HttpResponse:
    pending = list(ApprovalRequest.objects.for_user(request.user, Role.APPROVE)
                   .filter(status=Status.PENDING).select_related("tenant", "requester_key",
                                                                "policy_version__policy")
                   .prefetch_related("votes__approver")
                   .annotate(risk=RISK).order_by("risk", "created_at")[:200])
    runs = {(r.tenant_id, r.run_id): r for r in Run.objects.for_user(
        request.user, Role.APPROVE).filter(run_id__in={p.run_id for p in pending if p.run_id})}
    redactors: dict[int, Any] = {}
    items = []
    for item in pending:
        viewer = redactors.get(item.tenant_id)
        if viewer is None:  # arguments are shown as the approver's clearance allows
            viewer = redactors[item.tenant_id] = redactor_for(request.user, item.tenant_id)
        run = runs.get((item.tenant_id, item.run_id))
        items.append(QueueItem(item, viewer.redactor.redact(item.arguments, "arguments"), run,
                               own=caused_by(item, request.user),
                               shown_goal=None if run is None else viewer.redact_row(
                                   "run", {"goal": run.goal})["goal"]))
    decided = (ApprovalRequest.objects.for_user(request.user, Role.APPROVE)
               .exclude(status=Status.PENDING).select_related("tenant", "consumed_by")
               .order_by("-decided_at", "-id")[:RECENTLY_DECIDED])
    return render(request, "approvals/queue.html", {
        **admin.site.each_context(request), "title": "Approval queue", "pending": items,
        "decided": decided})


@login_required
@require_POST
def decide(request: HttpRequest, pk: int) -> HttpResponse:
    approval = ApprovalRequest.objects.for_user(request.user, Role.APPROVE).filter(pk=pk).first()
    if approval is None:
        raise Http404("No such request among your tenants.")
    approve = request.POST.get("decision") == "approve"
    try:
        decided = decide_approval(approval, by=actor_of(request), approve=approve,
                                  justification=request.POST.get("justification", ""))
    except (PermissionDenied, ValidationError) as exc:
        text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        messages.error(request, f"Request {pk}: {text}")
    else:
        messages.success(request, f"Request {pk} ({decided.tool}): {decided.status}"
                         if decided.status != Status.PENDING else
                         f"Request {pk}: your approval is recorded; it needs "
                         f"{decided.approvals_needed} in all.")
    return redirect("approval-queue")
