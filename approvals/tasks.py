"""Celery tasks of the approvals app."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="approvals.escalate_overdue")
def escalate_overdue() -> dict[str, int]:
    from .services import escalate_overdue as run

    return run()
