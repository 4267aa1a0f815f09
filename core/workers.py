"""Is anyone picking up queued work? Beat sends ``ledger_portal.worker_heartbeat`` every
``LEDGER_WORKER_HEARTBEAT_SECONDS``; whichever worker runs it records when
(``WorkerHeartbeat``). A heartbeat older than ``LEDGER_WORKER_STALE_SECONDS`` means no worker
(or no beat) is running: ``/readyz`` says so, and so do pages and commands that show a job
still queued, instead of a spinner that never ends.
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from .models import WorkerHeartbeat

#: How long a job may sit queued before we say who should be picking it up.
QUEUED_PATIENCE_SECONDS = 60


def record_heartbeat(hostname: str, now: datetime | None = None) -> None:
    WorkerHeartbeat.objects.update_or_create(hostname=hostname[:255],
                                             defaults={"seen_at": now or timezone.now()})


def heartbeat_age(now: datetime | None = None) -> float | None:
    """Seconds since any worker last beat, or None when none ever did."""
    last = WorkerHeartbeat.objects.aggregate(last=Max("seen_at"))["last"]
    return None if last is None else ((now or timezone.now()) - last).total_seconds()


def worker_alive(now: datetime | None = None) -> bool:
    age = heartbeat_age(now)
    return age is not None and age <= settings.LEDGER_WORKER_STALE_SECONDS


def stuck_message(queued_since: datetime, now: datetime | None = None) -> str:
    """What to say about a job queued since ``queued_since``: nothing while it is young or a
    worker is alive, else who should be picking it up."""
    now = now or timezone.now()
    waited = (now - queued_since).total_seconds()
    if waited < QUEUED_PATIENCE_SECONDS or worker_alive(now):
        return ""
    return (f"no worker has picked this up for {int(waited)} s: is the Celery worker "
            "running (`make worker`, or the worker and beat services)?")
