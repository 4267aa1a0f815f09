"""Every sign-in, failed sign-in and sign-out is a ``LoginEvent``: who, when, from which
address (as django-axes reads it, so the proxy settings are the same), by which method.

Fed by Django's ``user_logged_in``, ``user_login_failed`` and ``user_logged_out`` signals,
which every way in sends (the admin's form, single sign-on's callback, a test client's
``login``), and by single sign-on's refusals that never reach ``authenticate``. django-axes
listens to the same signals for its lockout; these receivers only add a record beside it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.http import HttpRequest
from django.utils import timezone

from .models import LoginEvent, LoginMethod, LoginOutcome

log = logging.getLogger(__name__)
SSO_BACKEND = "core.sso.SsoBackend"
PASSWORD_BACKENDS = {"django.contrib.auth.backends.ModelBackend"}


def _ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    from axes.helpers import get_client_ip_address

    return get_client_ip_address(request) or None


def _method_of_backend(backend: str | None) -> str:
    if backend == SSO_BACKEND:
        return LoginMethod.OIDC
    return LoginMethod.PASSWORD if backend in PASSWORD_BACKENDS else LoginMethod.OTHER


def record_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    LoginEvent.objects.create(account=user, username=user.get_username(), ip=_ip(request),
                              method=_method_of_backend(getattr(user, "backend", None)),
                              outcome=LoginOutcome.SUCCESS)


def record_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:  # signing out without having signed in
        return
    session = getattr(request, "session", None)
    backend = session.get("_auth_user_backend") if session is not None else None
    LoginEvent.objects.create(account=user, username=user.get_username(), ip=_ip(request),
                              method=_method_of_backend(backend), outcome=LoginOutcome.LOGOUT)


def record_failed_login(sender: Any, credentials: dict[str, Any],
                        request: HttpRequest | None = None, **kwargs: Any) -> None:
    from .sso import FAILURE_REASON

    if request is not None and "nonce" in credentials:  # single sign-on's callback
        record_failed_sso(request, getattr(request, FAILURE_REASON, "") or
                          "no user for this sign-in")
        return
    if not settings.LEDGER_PASSWORD_LOGIN:
        reason = "password sign-in is switched off"
    elif getattr(request, "axes_locked_out", False):
        reason = "locked out (too many failures)"
    else:
        reason = "wrong name or password"
    LoginEvent.objects.create(username=str(credentials.get("username") or "")[:150],
                              ip=_ip(request), method=LoginMethod.PASSWORD,
                              outcome=LoginOutcome.FAILURE, reason=reason)


def record_failed_sso(request: HttpRequest, reason: str) -> None:
    LoginEvent.objects.create(ip=_ip(request), method=LoginMethod.OIDC,
                              outcome=LoginOutcome.FAILURE, reason=reason[:200])
    request.sso_failure_recorded = True  # type: ignore[attr-defined]


def not_a_password_attempt(request: HttpRequest | None, credentials: dict[str, Any] | None
                           ) -> bool:
    """django-axes' whitelist (``AXES_WHITELIST_CALLABLE``): single sign-on's callback is no
    password guess, so axes neither counts it nor locks it out (five refused id_tokens would
    otherwise lock every sign-on from that address; the provider throttles its own sign-ins)."""
    return credentials is not None and "nonce" in credentials


def connect() -> None:
    user_logged_in.connect(record_login, dispatch_uid="ledger-login-event")
    user_logged_out.connect(record_logout, dispatch_uid="ledger-logout-event")
    user_login_failed.connect(record_failed_login, dispatch_uid="ledger-login-failed-event")


#: Rows removed per statement: short transactions beside the sign-ins still being recorded.
PRUNE_BATCH = 5000


def prune_login_events(now: datetime | None = None) -> int:
    """Remove the login events older than ``LEDGER_LOGIN_EVENT_RETENTION_DAYS``; how many.
    They name people and their addresses, so they are kept as long as security staff need
    them (a year and a month by default), then go."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.LEDGER_LOGIN_EVENT_RETENTION_DAYS)
    removed = 0
    while True:
        batch = list(LoginEvent.objects.filter(at__lt=cutoff).order_by("at")
                     .values_list("pk", flat=True)[:PRUNE_BATCH])
        if not batch:
            break
        removed += LoginEvent.objects.filter(pk__in=batch).delete()[0]
    if removed:
        log.info("removed %d login events older than %s", removed, cutoff.isoformat())
    return removed
