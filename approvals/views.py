"""The approver queue: pending requests of the approver's tenants, riskiest and oldest first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from core.actors import actor_of
from core.roles import Role
from runs.models import Run
from runs.services import ViewersByTenant

from .models import ApprovalRequest, Status
from .queue import QueueEntry, pending_queue, queue_entries
from .services import decide_approval

RECENTLY_DECIDED = 20


@dataclass
class QueueItem:
    """A pending request as the page shows it: the queue's entry plus its run (attributes fall
    through to the request)."""

    entry: QueueEntry
    run: Run | None
    shown_goal: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.entry.request, name)


@login_required
def approval_queue(request: HttpRequest) -> HttpResponse:
    pending = pending_queue(request.user)
    runs = {(r.tenant_id, r.run_id): r for r in Run.objects.for_user(
        request.user, Role.APPROVE).filter(run_id__in={p.run_id for p in pending if p.run_id})}
    viewers = ViewersByTenant(request.user)
    items = []
    for entry in queue_entries(pending, request.user, viewers):
        run = runs.get((entry.request.tenant_id, entry.request.run_id))
        items.append(QueueItem(entry, run, shown_goal=None if run is None else viewers(
            run.tenant_id).redact_row("run", {"goal": run.goal})["goal"]))
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
