"""Celery tasks of the ledger: thin, by id, safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from ledger_portal.models import Tenant

from .integrity import seal_tenant_digest


@shared_task(name="runs.seal_tenant_digests")
def seal_tenant_digests() -> dict[str, int]:
    """Beat task: sign a digest for every tenant whose run heads moved (the CloudTrail idea)."""
    sealed: dict[str, int] = {}
    for tenant_id, slug in Tenant.objects.values_list("pk", "slug"):
        digest = seal_tenant_digest(Tenant(pk=tenant_id, slug=slug))
        if digest is not None:
            sealed[slug] = digest.number
    return sealed


# Rollbacks: by id; acks_late + reject_on_worker_lost so a crashed worker's message comes back
# (the attempt it was making is on the row, and is re-sent with the same idempotency key).
@shared_task(bind=True, name="runs.run_rollback", acks_late=True, reject_on_worker_lost=True,
             max_retries=None, soft_time_limit=300, time_limit=330)
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
