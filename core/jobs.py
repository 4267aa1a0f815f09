"""Handing work to Celery so that a broker outage loses nothing.

Services enqueue with ``enqueue_on_commit``: after their transaction commits, the task is sent;
if the broker cannot take it (Redis down), the message is kept in the database outbox instead
of failing the request that already committed its job row, and the beat task
``ledger_portal.dispatch_outbox`` sends it once the broker is back. The job stays visibly
queued meanwhile; nothing is sent twice (a row is deleted in the transaction that sends it).
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

log = logging.getLogger(__name__)


def enqueue_on_commit(task: Any, args: tuple[Any, ...] = (), *, task_id: str | None = None,
                      countdown: float = 0) -> None:
    """Send ``task(*args)`` once the current transaction commits, or keep it for later."""
    transaction.on_commit(lambda: send_or_keep(task.name, list(args), task_id, countdown))


def send_or_keep(name: str, args: list[Any], task_id: str | None, countdown: float) -> bool:
    """Send the task now; on a broker failure keep it in the outbox. True if sent."""
    try:
        _send(name, args, task_id, countdown)
        return True
    except Exception as exc:  # kombu/redis raise several kinds; none may fail the request
        from .models import OutboxMessage

        OutboxMessage.objects.create(task=name, args=args, task_id=task_id or "",
                                     last_error=f"{type(exc).__name__}: {exc}"[:500])
        log.warning("broker unavailable: %s%s kept in the outbox (%s)", name, args,
                    type(exc).__name__)
        return False


def dispatch_outbox(limit: int = 500) -> dict[str, int]:
    """Send what the outbox holds, oldest first (beat task body). Rows are claimed with
    SKIP LOCKED where the database has it, so two dispatchers never send one twice."""
    from .models import OutboxMessage

    sent = failed = 0
    for pk in list(OutboxMessage.objects.order_by("pk").values_list("pk", flat=True)[:limit]):
        with transaction.atomic():
            message = OutboxMessage.objects.select_for_update(skip_locked=True).filter(
                pk=pk).first()
            if message is None:
                continue
            try:
                _send(message.task, message.args, message.task_id or None, 0)
            except Exception as exc:
                OutboxMessage.objects.filter(pk=pk).update(
                    attempts=message.attempts + 1,
                    last_error=f"{type(exc).__name__}: {exc}"[:500])
                failed += 1
                break  # the broker is still down: try again on the next beat
            message.delete()
            sent += 1
    return {"sent": sent, "failed": failed}


def _send(name: str, args: list[Any], task_id: str | None, countdown: float) -> None:
    """Send through the registered task (so ``CELERY_TASK_ALWAYS_EAGER`` runs it in place, as
    tests and the CLI's inline mode expect), or by name to a worker that knows it."""
    # the project's app: ledger_portal.celery makes it the default app when Django starts, and
    # this module must not import the project shell above it
    from celery import current_app

    task = current_app.tasks.get(name)
    if task is not None:
        later: dict[str, Any] = {"countdown": countdown} if countdown else {}
        task.apply_async(tuple(args), task_id=task_id, **later)
    else:
        current_app.send_task(name, args=args, task_id=task_id, countdown=countdown or None)
