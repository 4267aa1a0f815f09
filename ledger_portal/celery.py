"""The Celery app; configuration comes from Django settings (``CELERY_*``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")

app = Celery("ledger_portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
