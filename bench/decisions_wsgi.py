"""bench.decisions only: the portal's WSGI application with ``bench.decisions_urls`` as its URL
conf (the portal plus the constant baseline view). Run by the benchmark's gunicorn on
127.0.0.1, never deployed."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

settings.ROOT_URLCONF = "bench.decisions_urls"
application = get_wsgi_application()
