"""The Celery app; configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")

app = Celery("ledger_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _freeze_startup_heap(**_: object) -> None:
    from core.heap import freeze_startup_heap

    freeze_startup_heap()


# Each process that runs tasks freezes its start-up heap (core/heap.py): prefork children when
# they start, and the main process once ready (the solo and thread pools run tasks there).
signals.worker_process_init.connect(_freeze_startup_heap, weak=False)
signals.worker_ready.connect(_freeze_startup_heap, weak=False)
