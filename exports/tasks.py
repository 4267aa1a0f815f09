"""Celery tasks of audit exports: thin, by id, safe to run twice and to die halfway.

``plan_export`` cuts the window into parts and fans them out; each ``produce_export_part`` writes
one; the last to finish starts ``join_export`` (the chord's join, coordinated in the database:
no result backend is needed, so it works on the filesystem broker and eagerly too).
``acks_late`` + ``reject_on_worker_lost``: a task whose worker is killed is delivered again.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="exports.plan_export", acks_late=True, reject_on_worker_lost=True)
def plan_export(export_id: int) -> int:
    from .services import plan

    part_ids = plan(export_id)
    for part_id in part_ids:
        produce_export_part.delay(part_id)
    if not part_ids:
        join_export.delay(export_id)
    return len(part_ids)


@shared_task(name="exports.produce_export_part", acks_late=True, reject_on_worker_lost=True)
def produce_export_part(part_id: int) -> bool:
    from .models import ExportPart
    from .services import produce_part

    last = produce_part(part_id)
    if last:
        join_export.delay(ExportPart.objects.values_list("export_id", flat=True).get(pk=part_id))
    return last


@shared_task(name="exports.join_export", acks_late=True, reject_on_worker_lost=True)
def join_export(export_id: int) -> str | None:
    from .services import join

    export = join(export_id)
    return None if export is None else export.status


@shared_task(name="exports.expire_exports")
def expire_exports() -> int:
    from .services import expire_exports as expire

    return expire()
