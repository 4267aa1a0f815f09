"""API authentication: an agent's API key or a person's personal access token, both as
``Authorization: Bearer <credential>`` (``lpk_...`` and ``lpt_...``).

The key's tenant and scopes travel on the request principal; the tenant is never taken from a
request body. A personal access token acts as its person narrowed to its scopes, exactly as
the ``ledger`` command does with it, and is named with it in what it records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from ..access_tokens import TOKEN_PREFIX, TokenRefused, actor_for_token
from ..actors import ApiKeyPrincipal
from ..models import KEY_PREFIX, ApiKey, CliActor, Tenant
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


Converter = Callable[[Any, Any, Any], Any]
#: Built once per process: the statement, and the converters per column that needs one.
_KEY_LOOKUP: list[tuple[str, list[tuple[int, Any, list[Converter]]]]] = []


def _key_lookup() -> tuple[str, list[tuple[int, Any, list[Converter]]]]:
    """``ApiKey.objects.select_related("tenant").filter(prefix=...)`` written out once: on
    every API request Django's compiler cost several times what PostgreSQL takes to answer it
    (bench/decisions.py). Columns come from the models' fields, values are parameters, and
    each column's value goes through the converters the ORM would apply."""
    if not _KEY_LOOKUP:
        ops, q = connection.ops, connection.ops.quote_name
        key_meta, tenant_meta = ApiKey._meta, Tenant._meta
        cols = ([f.get_col("k") for f in key_meta.concrete_fields]
                + [f.get_col("t") for f in tenant_meta.concrete_fields])

        def column(field: Any) -> str:
            return q(str(field.column))

        select = ", ".join(f"{c.alias}.{column(c.target)}" for c in cols)
        sql = (f"SELECT {select} FROM {q(key_meta.db_table)} k "  # noqa: S608
               f"INNER JOIN {q(tenant_meta.db_table)} t "
               f"ON t.{column(tenant_meta.pk)} = k.{column(key_meta.get_field('tenant'))} "
               f"WHERE k.{column(key_meta.get_field('prefix'))} = %s")
        converters = [(i, col, ops.get_db_converters(col) + col.get_db_converters(connection))
                      for i, col in enumerate(cols)]
        _KEY_LOOKUP.append((sql, [(i, col, found) for i, col, found in converters if found]))
    return _KEY_LOOKUP[0]


def key_by_prefix(prefix: str) -> ApiKey | None:
    """The API key of ``prefix`` with its tenant loaded, as the ORM would give it; None when
    there is none. API keys are always read on the primary (``core.db_routing``)."""
    sql, converters = _key_lookup()
    with connection.cursor() as cursor:
        cursor.execute(sql, [prefix])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for i, col, functions in converters:
        for convert in functions:
            values[i] = convert(values[i], col, connection)
    key_fields = ApiKey._meta.concrete_fields
    key = ApiKey.from_db(connection.alias, [f.attname for f in key_fields],
                         values[:len(key_fields)])
    tenant = Tenant.from_db(connection.alias,
                            [f.attname for f in Tenant._meta.concrete_fields],
                            values[len(key_fields):])
    ApiKey._meta.get_field("tenant").set_cached_value(key, tenant)
    return key


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
        key = key_by_prefix(parts[1])
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
