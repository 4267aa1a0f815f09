"""``/healthz``: whether this web process can serve, for a load balancer, systemd or a
container's health check. ``/readyz``: whether the whole portal works, queued work included
(the database, the broker, a worker seen recently). Neither names a version, host or setting,
so they need no login."""

from __future__ import annotations

from django.conf import settings
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


def _broker_answers() -> bool:
    from ledger_portal.celery import app

    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, timeout=2)
        return True
    except Exception:  # kombu and redis raise several kinds; each means "unavailable"
        return False


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the broker answer and a worker ran its heartbeat within
    ``LEDGER_WORKER_STALE_SECONDS``; 503 naming what is missing otherwise. Agents can record
    without a worker, so a load balancer should use /healthz: this is for whoever is told when
    exports, replays and rollbacks would sit queued."""
    from core.workers import heartbeat_age

    database = _database_answers()
    broker = _broker_answers()
    age = heartbeat_age() if database else None
    worker = age is not None and age <= settings.LEDGER_WORKER_STALE_SECONDS
    ready = database and broker and worker
    body = {"status": "ok" if ready else "unavailable",
            "database": "ok" if database else "unavailable",
            "broker": "ok" if broker else "unavailable",
            "worker": "ok" if worker else ("never seen" if age is None else "stale"),
            "worker_heartbeat_age_seconds": None if age is None else round(age)}
    return JsonResponse(body, status=200 if ready else 503)
