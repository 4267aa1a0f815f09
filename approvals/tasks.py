"""Celery tasks of the approvals app."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="approvals.notify_approvers")
def notify_approvers(request_id: int, event: str) -> int:
    """Tell the approvers about a request (after its creation committed); how many
    deliveries were attempted."""
    from .models import ApprovalRequest
    from .notify import notify_approvers as notify

    request = ApprovalRequest.objects.select_related("tenant").filter(pk=request_id).first()
    return 0 if request is None else len(notify(request, event))


@shared_task(name="approvals.escalate_overdue")
def escalate_overdue() -> dict[str, int]:
    from .services import escalate_overdue as run

    return run()
