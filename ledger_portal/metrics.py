"""``GET /metrics``: the counters ``core.metrics`` keeps, with gauges read at scrape time from
every app (approval requests, integrity alarms, the worker heartbeat, the queue), so it sits in
the project package, above the apps it reads."""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector


class StateCollector(Collector):
    """Gauges read at scrape time: what is, not what happened."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count
        from django.utils import timezone

        from approvals.models import ApprovalRequest
        from core.models import WorkerHeartbeat
        from runs.models import DeferredItem, IntegrityAlarm

        approvals = GaugeMetricFamily("ledger_approval_requests",
                                      "Approval requests by status", labels=["status"])
        for status, number in (ApprovalRequest.objects.order_by().values_list("status")
                               .annotate(n=Count("id"))):
            approvals.add_metric([status], number)
        yield approvals
        deferred = GaugeMetricFamily(
            "ledger_deferred_items", "Received data not placed in the ledger (Deferred pending "
            "ledger schema reconciliation), by status and source", labels=["status", "source"])
        for status, source, number in (DeferredItem.objects.order_by().values_list(
                "status", "source").annotate(n=Count("id"))):
            deferred.add_metric([status, source], number)
        yield deferred
        alarms = GaugeMetricFamily("ledger_integrity_alarms",
                                   "Integrity alarms raised (they are kept, never deleted)")
        alarms.add_metric([], IntegrityAlarm.objects.count())
        yield alarms
        beat = WorkerHeartbeat.objects.order_by("-seen_at").values_list("seen_at",
                                                                        flat=True).first()
        age = GaugeMetricFamily("ledger_worker_heartbeat_age_seconds",
                                "Seconds since a worker last ran its heartbeat (-1: never)")
        age.add_metric([], (timezone.now() - beat).total_seconds() if beat else -1)
        yield age
        depth = _queue_depth()
        if depth is not None:
            queue = GaugeMetricFamily("ledger_celery_queue_depth",
                                      "Messages waiting in the Celery queue")
            queue.add_metric([], depth)
            yield queue


def _queue_depth() -> int | None:
    """LLEN of the default queue when the broker is Redis; None otherwise (not known cheaply)."""
    from django.conf import settings

    url = getattr(settings, "CELERY_BROKER_URL", "") or ""
    if not url.startswith("redis"):
        return None
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=1)
        depth: Any = client.llen("celery")  # a number: this client is synchronous
        return int(depth)
    except redis.RedisError:
        return None


_state_registered = False


def exposition() -> bytes:
    """The Prometheus text for a scrape: every process's samples (multiprocess mode) or this
    process's, with the state gauges."""
    global _state_registered
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(StateCollector())
        return generate_latest(registry)
    if not _state_registered:
        REGISTRY.register(StateCollector())
        _state_registered = True
    return generate_latest(REGISTRY)


def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text, for a scraper holding ``LEDGER_METRICS_TOKEN`` (Bearer) or calling from
    ``LEDGER_METRICS_ALLOW``. With neither configured the page does not exist (404); otherwise
    a caller without the token is asked for it (401), or refused if no token is set (403)."""
    token, allowed = settings.LEDGER_METRICS_TOKEN, settings.LEDGER_METRICS_ALLOW
    if not token and not allowed:
        raise Http404("Metrics are off (set LEDGER_METRICS_TOKEN or LEDGER_METRICS_ALLOW).")
    given = request.headers.get("Authorization", "")
    by_token = bool(token) and secrets.compare_digest(given.encode(),
                                                      f"Bearer {token}".encode())
    if not by_token and not _from_allowed(request.META.get("REMOTE_ADDR", ""), allowed):
        if not token:
            return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
        refused = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    return HttpResponse(exposition(), content_type="text/plain; version=0.0.4; charset=utf-8")


def _from_allowed(address: str, allowed: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allowed)
