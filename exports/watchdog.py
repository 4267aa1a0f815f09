"""The exports' watchdog (see ``core/watchdog.py``): an export that stopped moving is
handed to workers again. Every step is safe to run twice: a part claimed again is written again
(counted in its attempts, the earlier attempt's file ignored), a join claimed again reuses what
it signed."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from core.jobs import enqueue_on_commit
from core.models import OutboxMessage
from core.watchdog import claim_stalled

from .models import AuditExport, ExportPart, ExportStatus, PartStatus
from .services import _fail


def requeue_stalled_exports(now: datetime | None = None) -> dict[str, int]:
    """Watchdog body: queue again what a stalled export still needs (its plan, its unfinished
    parts, or its join); fail one that stalled too often, with the reason."""
    from .tasks import join_export, plan_export, produce_export_part

    active = AuditExport.objects.filter(status__in=[ExportStatus.QUEUED, ExportStatus.RUNNING])
    requeued = failed = 0
    for stall in claim_stalled(active, now, _waiting_in_outbox):
        export = AuditExport.objects.get(pk=stall.pk)
        if stall.exhausted:
            _fail(export.pk, stall.reason(f"export {export.pk} stopped at {export.percent}%"))
            failed += 1
            continue
        with transaction.atomic():
            if export.status == ExportStatus.QUEUED:
                enqueue_on_commit(plan_export, (export.pk,))
            elif export.joining:
                enqueue_on_commit(join_export, (export.pk,))
            else:
                for part_id in export.parts.exclude(status=PartStatus.DONE).values_list(
                        "pk", flat=True):
                    enqueue_on_commit(produce_export_part, (part_id,))
        requeued += 1
    return {"requeued": requeued, "failed": failed}


def _waiting_in_outbox(export_id: int, status: str) -> bool:
    """Whether a message of this export (its plan, a part, its join) waits for the broker."""
    parts = [[pk] for pk in ExportPart.objects.filter(export_id=export_id).values_list(
        "pk", flat=True)]
    return OutboxMessage.objects.filter(
        task__in=["exports.plan_export", "exports.join_export"], args=[export_id]).exists() \
        or OutboxMessage.objects.filter(task="exports.produce_export_part",
                                        args__in=parts).exists()
