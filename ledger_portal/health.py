"""``/healthz``: whether this web process can serve, for a load balancer, systemd or a
container's health check. It names no version, host or setting, so it needs no login."""

from __future__ import annotations

from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _database_answers() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except DatabaseError:
        return False


def _cache_answers() -> bool:
    try:
        cache.get("ledger:healthz")
        return True
    except Exception:  # any cache failure means "unavailable", never a 500
        return False


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 while the database answers, 503 when it does not. The cache is reported but does
    not fail the check: agents keep recording through a Redis outage (docs/operations.md), so
    taking the web process out of service for one would stop them for nothing."""
    database = _database_answers()
    body = {"status": "ok" if database else "unavailable",
            "database": "ok" if database else "unavailable",
            "cache": "ok" if _cache_answers() else "unavailable"}
    return JsonResponse(body, status=200 if database else 503)
