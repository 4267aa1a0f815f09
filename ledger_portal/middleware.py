"""Response headers every page and API answer carries."""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse


class SecurityHeadersMiddleware:
    """A Content-Security-Policy on every answer, and ``Cache-Control: no-store`` on every
    answer that is not a static file: pages and API answers carry ledger data, which must not
    stay in a browser's or a proxy's cache."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", settings.LEDGER_CSP)
        static_prefix = "/" + str(settings.STATIC_URL).lstrip("/")
        if not request.path.startswith(static_prefix):
            response.headers["Cache-Control"] = "no-store, private"
        return response
