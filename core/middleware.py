"""Response headers every page and API answer carries, and JSON errors on the API."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from .tenancy import remember_roles

log = logging.getLogger("ledger_portal.api")


@functools.lru_cache(maxsize=8)
def content_security_policy(policy: str, sso_issuer: str) -> str:
    """``policy``, letting forms lead to the single sign-on provider where one is configured:
    "Log out" posts here and is redirected to the provider's end-session endpoint, and a
    browser holds a redirect after a form to the form's ``form-action``."""
    if not sso_issuer or "form-action 'self'" not in policy:
        return policy
    parts = urlsplit(sso_issuer)
    return policy.replace("form-action 'self'",
                          f"form-action 'self' {parts.scheme}://{parts.netloc}", 1)


class SecurityHeadersMiddleware:
    """A Content-Security-Policy on every answer, and ``Cache-Control: no-store`` on every
    answer that is not a static file: pages and API answers carry ledger data, which must not
    stay in a browser's or a proxy's cache."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy",
                                    content_security_policy(settings.LEDGER_CSP,
                                                            settings.OIDC_ISSUER))
        static_prefix = "/" + str(settings.STATIC_URL).lstrip("/")
        if not request.path.startswith(static_prefix):
            response.headers["Cache-Control"] = "no-store, private"
        return response


#: Paths whose callers are programs: their errors are JSON, never an HTML page.
API_PREFIXES = ("/api/", "/v1/")


class RefuseNulInQueryMiddleware:
    """A NUL character in a query string is refused with a 400 before any view runs:
    PostgreSQL text cannot hold one, so a filter comparing it would fail as a server error
    (JSON bodies are checked by ``payload_safety`` the same way)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        bad = [key for key, values in request.GET.lists()
               if "\x00" in key or any("\x00" in value for value in values)]
        if bad:
            detail = "A query parameter holds a NUL character, which no value may hold."
            if request.path.startswith(API_PREFIXES):  # the shape of every API refusal
                return JsonResponse({"detail": detail, "errors": [
                    {"path": f"query.{key!r}", "message": "holds a NUL character"}
                    for key in bad[:10]]}, status=400)
            return HttpResponse(detail, status=400, content_type="text/plain")
        return self.get_response(request)
DATABASE_RETRY_AFTER = "5"


class ApiErrorsAsJsonMiddleware:
    """An error no view handled is answered in JSON on the API: a 503 with ``Retry-After``
    when the database cannot be reached (clients retry), a 500 otherwise. The exception is
    logged as Django would; its text, which may quote data, is never sent."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception
                          ) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIXES):
            return None
        from django.db import InterfaceError, OperationalError

        if isinstance(exception, OperationalError | InterfaceError):
            log.warning("API %s %s: database unavailable: %s", request.method, request.path,
                        type(exception).__name__)
            response = JsonResponse({"detail": "The ledger database is unavailable; nothing "
                                     "was recorded. Retry later."}, status=503)
            response["Retry-After"] = DATABASE_RETRY_AFTER
            return response
        if isinstance(exception, Http404 | PermissionDenied | SuspiciousOperation):
            return None  # Django answers these itself (404, 403, 400)
        log.error("API %s %s failed", request.method, request.path, exc_info=exception)
        return JsonResponse({"detail": "The portal failed to answer this request; the error "
                             "is logged. Nothing was recorded unless the answer says so."},
                            status=500)


class RolesPerRequestMiddleware:
    """A signed-in person's roles are read once per request, not once per queryset the request
    scopes (``tenancy.roles_of``). An API key's request carries its tenant and scopes and reads
    no roles at all."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        remember_roles(getattr(request, "user", None))
        return self.get_response(request)
