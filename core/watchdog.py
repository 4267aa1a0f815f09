"""Watchdogs over long jobs (exports, replays, back-tests): a job whose worker died, or lost
its database mid-task, would otherwise stay "running 59%" for ever.

Every job kind records a heartbeat when a worker claims it and as it moves (``beat``). The beat
task ``ledger_portal.watch_jobs`` calls each kind's watchdog (``LEDGER_JOB_WATCHDOGS``); a job
with no heartbeat for ``LEDGER_JOB_STALL_SECONDS`` is queued again where that is safe (each
attempt is idempotent) or failed with its reason, and one that stalls more than
``LEDGER_JOB_MAX_STALLS`` times is failed. Rollbacks have their own (``fail_stuck_rollbacks``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Model, Q, QuerySet
from django.utils import timezone
from django.utils.module_loading import import_string


def beat(model: type[Model], pk: int, **changes: Any) -> int:
    """Record that job ``pk`` is moving (with other field changes in the same update)."""
    return int(model._default_manager.filter(pk=pk).update(heartbeat_at=timezone.now(),
                                                            **changes))


@dataclass(frozen=True)
class Stall:
    """A stalled job, claimed by this watchdog pass. ``stalls`` counts the times it was found
    stalled while running; a queued job (its message lost, or waiting behind others) is only
    ever sent again, never failed for it."""

    pk: int
    status: str
    stalls: int
    quiet_since: datetime

    @property
    def exhausted(self) -> bool:
        return self.status != "queued" and self.stalls > settings.LEDGER_JOB_MAX_STALLS

    def reason(self, what: str) -> str:
        return (f"{what}: no worker showed it moving for {settings.LEDGER_JOB_STALL_SECONDS} s "
                f"(quiet since {self.quiet_since:%Y-%m-%d %H:%M:%S} UTC), {self.stalls} times; "
                "its workers died or lost the database")


#: Whether a quiet job is still accounted for (pk, status): its message waits in the outbox
#: for the broker, or a live worker holds it. Such a job is left alone and no stall counted.
StillAccountedFor = Callable[[int, str], bool]


def claim_stalled(jobs: QuerySet[Any], now: datetime | None = None,
                  accounted_for: StillAccountedFor | None = None) -> list[Stall]:
    """The jobs of ``jobs`` with no heartbeat (or, never claimed, no creation) within the stall
    time, each claimed by one conditional update that repeats every condition: of two
    watchdogs one acts, and a job a worker picked up meanwhile is left to it."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LEDGER_JOB_STALL_SECONDS)
    quiet = Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, created_at__lt=cutoff)
    claimed = []
    for pk, status, heartbeat_at, created_at, stalls in jobs.filter(quiet).values_list(
            "pk", "status", "heartbeat_at", "created_at", "stalls"):
        if accounted_for is not None and accounted_for(pk, status):
            continue
        counted = 0 if status == "queued" else 1
        if jobs.filter(quiet, pk=pk, status=status, stalls=stalls).update(
                heartbeat_at=now, stalls=F("stalls") + counted):
            claimed.append(Stall(pk, status, stalls + counted, heartbeat_at or created_at))
    return claimed


def waiting_in_outbox(task: str, pk: int) -> bool:
    """Whether the job's message is kept for a broker that was down (not lost: it will go)."""
    from .models import OutboxMessage

    return OutboxMessage.objects.filter(task=task, args=[pk]).exists()


def watch_jobs(now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Beat task body: every job kind's watchdog, by its dotted path."""
    return {path.rpartition(".")[2]: import_string(path)(now)
            for path in settings.LEDGER_JOB_WATCHDOGS}
