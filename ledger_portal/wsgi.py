import os

from django.core.wsgi import get_wsgi_application

from core.heap import freeze_startup_heap

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
application = get_wsgi_application()
# Django and every app are loaded now: the collector need never walk them again (core/heap.py).
freeze_startup_heap()
