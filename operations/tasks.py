"""Celery tasks of operations: thin, by id, safe to run twice. Their names kept the ``runs.``
prefix they had before this app was split out, so messages queued before an upgrade still run."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction


# Time limits of every task kind: settings.LEDGER_TASK_TIME_LIMITS.
@shared_task(name="runs.run_replay", bind=True, acks_late=True, reject_on_worker_lost=True)
def run_replay(self: Any, replay_id: int) -> str | None:
    """Walk a replay; while it waits for a person, look again later instead of blocking."""
    from .models import ReplayStatus
    from .replay import execute_replay, schedule_replay

    replay = execute_replay(replay_id, self.request.id)
    if replay is None:
        return None
    if replay.status == ReplayStatus.WAITING_APPROVAL and not self.request.is_eager:
        with transaction.atomic():
            schedule_replay(replay, countdown=settings.LEDGER_REPLAY_APPROVAL_POLL)
    return str(replay.status)


@shared_task(name="runs.watch_replays")
def watch_replays() -> dict[str, int]:
    """Beat task: fail replays stuck past their deadline; resume those whose approval came."""
    from .replay import fail_overdue_replays, resume_decided_replays

    return {"failed": fail_overdue_replays(), "resumed": resume_decided_replays()}


# Rollbacks: by id; acks_late + reject_on_worker_lost so a crashed worker's message comes back
# (the attempt it was making is on the row, and is re-sent with the same idempotency key).
@shared_task(bind=True, name="runs.run_rollback", acks_late=True, reject_on_worker_lost=True,
             max_retries=None)
def run_rollback(self: Any, rollback_id: int) -> str:
    from .rollback import attempt_rollback

    attempt = attempt_rollback(rollback_id)
    if attempt.retry_in is not None:
        raise self.retry(countdown=attempt.retry_in)
    return attempt.status


@shared_task(name="runs.fail_stuck_rollbacks")
def fail_stuck_rollbacks() -> int:
    """Beat task: rollbacks that have not moved past their time limit are marked failed."""
    from .rollback import fail_stuck_rollbacks as run

    return run()
