"""Platform tasks (thin: each calls one function)."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="ledger_portal.dispatch_outbox")
def dispatch_outbox() -> dict[str, int]:
    """Beat task: send the messages the broker could not take when they were made."""
    from .jobs import dispatch_outbox as run

    return run()
