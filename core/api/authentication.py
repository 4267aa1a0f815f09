"""API authentication: an agent's API key or a person's personal access token, both as
``Authorization: Bearer <credential>`` (``lpk_...`` and ``lpt_...``).

The key's tenant and scopes travel on the request principal; the tenant is never taken from a
request body. A personal access token acts as its person narrowed to its scopes, exactly as
the ``ledger`` command does with it, and is named with it in what it records.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ..access_tokens import TOKEN_PREFIX, TokenRefused, actor_for_token
from ..actors import ApiKeyPrincipal
from ..models import KEY_PREFIX, ApiKey, CliActor
from ..tenancy import remember_roles
from .bookkeeping import best_effort


def bound_agents(principal: Any) -> frozenset[str] | None:
    """The agents ``principal`` may record and ask for: its key's binding, or None (any)."""
    return getattr(principal, "agent_ids", None)


def refuse_unbound_agent(principal: Any, agent_id: str) -> None:
    """403 when ``principal`` is a key bound to agents other than ``agent_id``."""
    bound = bound_agents(principal)
    if bound is not None and agent_id not in bound:
        raise exceptions.PermissionDenied(
            f"This API key acts for the agent(s) {', '.join(sorted(bound))}, not "
            f"{agent_id or '(no agent)'!r}.")


#: Key prefix -> monotonic time until which this process does not ask the cache about the
#: key's last-use mark again.
_ASKED_UNTIL: dict[str, float] = {}
MAX_REMEMBERED_KEYS = 10_000


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiKeyPrincipal, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] != self.keyword:
            return None
        if len(header) == 2 and header[1].startswith(f"{TOKEN_PREFIX}_"):
            return None  # a person's token: PersonalTokenAuthentication's
        if len(header) != 2 or not header[1].startswith(f"{KEY_PREFIX}_"):
            raise exceptions.AuthenticationFailed("Malformed API key.")
        raw = header[1]
        parts = raw.split("_", 2)
        if len(parts) != 3:
            raise exceptions.AuthenticationFailed("Malformed API key.")
        key = ApiKey.objects.select_related("tenant").filter(prefix=parts[1]).first()
        if key is None or not key.matches(raw):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        if key.confirmed_at is None:
            raise exceptions.AuthenticationFailed(
                "This API key awaits a second person's confirmation.")
        if not key.is_usable:
            raise exceptions.AuthenticationFailed("This API key has expired.")
        self._record_use(key, request)
        return ApiKeyPrincipal(key), key

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    @staticmethod
    def _record_use(key: ApiKey, request: Request) -> None:
        # One write per key per interval, not one per request; and this process asks the
        # cache once per key per interval, not on every request (a round trip that a
        # decision waited for).
        interval = settings.LEDGER_API_KEY_TOUCH_INTERVAL
        if interval:
            now = time.monotonic()
            if _ASKED_UNTIL.get(key.prefix, 0.0) > now:
                return
            if len(_ASKED_UNTIL) >= MAX_REMEMBERED_KEYS:
                _ASKED_UNTIL.clear()
            _ASKED_UNTIL[key.prefix] = now + interval
        if interval and not best_effort(
                "an API key's last-use mark",
                lambda: cache.add(f"apikey-used:{key.prefix}", 1, interval), fallback=False):
            return  # written within the interval, or the cache is down: skip this time
        ApiKey.objects.filter(pk=key.pk).update(
            last_used_at=timezone.now(), last_used_ip=request.META.get("REMOTE_ADDR"))


class PersonalTokenAuthentication(authentication.BaseAuthentication):
    """A person's personal access token (``core.access_tokens``): for approvers and operators
    who work from a script or a phone rather than a browser session."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[CliActor, None] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if len(header) != 2 or header[0] != self.keyword or \
                not header[1].startswith(f"{TOKEN_PREFIX}_"):
            return None
        try:
            actor = actor_for_token(header[1])
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None
        return remember_roles(actor), None

    def authenticate_header(self, request: Request) -> str:
        return self.keyword
