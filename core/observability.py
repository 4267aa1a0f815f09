"""Each request's id, access-log line and metrics, and the ``/metrics`` endpoint.

The access line names the route (its URL pattern's name), status, duration, tenant slug when
the request named one, and who asked (a user id or an API key id): never a path's ids, a query
string, a header value or a body, which may carry what an agent sent.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse

from .metrics import REQUEST_SECONDS, REQUESTS, exposition

access_log = logging.getLogger("ledger.access")
SANE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def request_id_of(request: HttpRequest) -> str:
    """The caller's ``X-Request-ID`` when it is a sane token, else the W3C ``traceparent``'s
    trace id, else a new one."""
    given = request.headers.get("X-Request-ID", "")
    if SANE_ID.fullmatch(given):
        return given
    trace = TRACEPARENT.fullmatch(request.headers.get("traceparent", "").strip())
    return trace.group(1) if trace else secrets.token_hex(16)


class RequestObservationMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        request.request_id = request_id_of(request)  # type: ignore[attr-defined]
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        route = (match.view_name if match and match.view_name else "unmatched")[:100]
        REQUESTS.labels(route=route, method=request.method or "", status=str(
            response.status_code)).inc()
        REQUEST_SECONDS.labels(route=route).observe(elapsed)
        response["X-Request-ID"] = request.request_id  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        key = getattr(user, "api_key", None)
        access_log.info("%s %s %s %.1fms id=%s", request.method, route, response.status_code,
                        elapsed * 1000, request.request_id, extra={  # type: ignore[attr-defined]
            "request_id": request.request_id,  # type: ignore[attr-defined]
            "route": route, "method": request.method, "status": response.status_code,
            "duration_ms": round(elapsed * 1000, 2),
            "tenant": _tenant_slug(request, match),
            "user_id": getattr(user, "pk", None) if key is None else None,
            "api_key_id": getattr(key, "pk", None)})
        return response


def _tenant_slug(request: HttpRequest, match: object) -> str | None:
    kwargs = getattr(match, "kwargs", {}) or {}
    slug = kwargs.get("tenant") or kwargs.get("slug") or request.GET.get("tenant")
    return slug if isinstance(slug, str) and SANE_ID.fullmatch(slug) else None


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
