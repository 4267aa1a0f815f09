import os

from django.core.wsgi import get_wsgi_application

from core.heap import prepare_heap_for_serving

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
application = get_wsgi_application()
# Django and every app are loaded now: the collector need never walk them again, and runs
# less often on what requests allocate (core/heap.py).
prepare_heap_for_serving()
