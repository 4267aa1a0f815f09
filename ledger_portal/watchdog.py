"""Watchdogs over long jobs (exports, replays, back-tests): a job whose worker died, or lost
its database mid-task, would otherwise stay "running 59%" for ever.

Every job kind records a heartbeat when a worker claims it and as it moves (``beat``). The beat
task ``ledger_portal.watch_jobs`` calls each kind's watchdog (``LEDGER_JOB_WATCHDOGS``); a job
with no heartbeat for ``LEDGER_JOB_STALL_SECONDS`` is queued again where that is safe (each
attempt is idempotent) or failed with its reason, and one that stalls more than
``LEDGER_JOB_MAX_STALLS`` times is failed. Rollbacks have their own (``fail_stuck_rollbacks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Model, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.module_loading import import_string


def beat(model: type[Model], pk: int, **changes: Any) -> int:
    """Record that job ``pk`` is moving (with other field changes in the same update)."""
    return int(model._default_manager.filter(pk=pk).update(heartbeat_at=timezone.now(),
                                                            **changes))


@dataclass(frozen=True)
class Stall:
    """A stalled job, claimed by this watchdog pass: ``stalls`` counts this one."""

    pk: int
    stalls: int
    quiet_since: datetime

    @property
    def exhausted(self) -> bool:
        return self.stalls > settings.LEDGER_JOB_MAX_STALLS

    def reason(self, what: str) -> str:
        return (f"{what}: no worker showed it moving for {settings.LEDGER_JOB_STALL_SECONDS} s "
                f"(quiet since {self.quiet_since:%Y-%m-%d %H:%M:%S} UTC), {self.stalls} times; "
                "its workers died or lost the database")


def claim_stalled(jobs: QuerySet[Any], now: datetime | None = None) -> list[Stall]:
    """The jobs of ``jobs`` with no heartbeat (or, never claimed, no creation) within the stall
    time, each claimed by one conditional update: of two watchdogs, one acts."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LEDGER_JOB_STALL_SECONDS)
    quiet = jobs.annotate(quiet_since=Coalesce("heartbeat_at", "created_at")).filter(
        quiet_since__lt=cutoff)
    claimed = []
    for pk, quiet_since, stalls in quiet.values_list("pk", "quiet_since", "stalls"):
        if jobs.model._default_manager.filter(pk=pk, stalls=stalls).update(
                heartbeat_at=now, stalls=F("stalls") + 1):
            claimed.append(Stall(pk, stalls + 1, quiet_since))
    return claimed


def waiting_in_outbox(task: str, pk: int) -> bool:
    """Whether the job's message is kept for a broker that was down (not lost: it will go)."""
    from .models import OutboxMessage

    return OutboxMessage.objects.filter(task=task, args=[pk]).exists()


def watch_jobs(now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Beat task body: every job kind's watchdog, by its dotted path."""
    return {path.rpartition(".")[2]: import_string(path)(now)
            for path in settings.LEDGER_JOB_WATCHDOGS}
