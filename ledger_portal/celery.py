"""The Celery app; configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")

app = Celery("ledger_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _prepare_heap_for_serving(**_: object) -> None:
    from core.heap import prepare_heap_for_serving

    prepare_heap_for_serving()


# Each process that runs tasks prepares its heap for serving (core/heap.py): prefork children when
# they start, and the main process once ready (the solo and thread pools run tasks there).
signals.worker_process_init.connect(_prepare_heap_for_serving, weak=False)
signals.worker_ready.connect(_prepare_heap_for_serving, weak=False)
