"""Each request's id, access-log line and metrics (``/metrics`` itself: ``ledger_portal.metrics``).

The access line names the route (its URL pattern's name), status, duration, tenant slug when
the request named one, and who asked (a user id or an API key id): never a path's ids, a query
string, a header value or a body, which may carry what an agent sent.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from .metrics import REQUEST_SECONDS, REQUESTS

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
