"""Platform tasks (thin: each calls one function)."""

from __future__ import annotations

from typing import Any

from celery import shared_task


@shared_task(name="ledger_portal.dispatch_outbox")
def dispatch_outbox() -> dict[str, int]:
    """Beat task: send the messages the broker could not take when they were made."""
    from .jobs import dispatch_outbox as run

    return run()


@shared_task(name="ledger_portal.watch_jobs")
def watch_jobs() -> dict[str, dict[str, int]]:
    """Beat task: long jobs whose worker stopped showing them move are queued again or
    failed with the reason."""
    from .watchdog import watch_jobs as run

    return run()


@shared_task(name="ledger_portal.worker_heartbeat", bind=True)
def worker_heartbeat(self: Any) -> str:
    """Beat task: the worker that runs it says it is alive (``core.workers``)."""
    from .workers import record_heartbeat

    hostname = str(self.request.hostname or "unknown")
    record_heartbeat(hostname)
    return hostname


@shared_task(name="ledger_portal.prune_login_events")
def prune_login_events() -> int:
    """Beat task: login events past their retention period go."""
    from .login_audit import prune_login_events as run

    return run()


@shared_task(name="ledger_portal.ensure_partitions")
def ensure_partitions() -> list[str]:
    """Beat task: the coming months' partitions of the partitioned tables exist before a row
    needs them (PostgreSQL; nothing to do on SQLite)."""
    from django.conf import settings

    from .partitions import ensure_partitions as run

    return run(settings.LEDGER_PARTITION_MONTHS_AHEAD)
