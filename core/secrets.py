"""Credentials for tools: resolved at call time from a reference, never stored in the database.

A tool names a secret reference (``env:BILLING_API_TOKEN``); the backend named by the
``LEDGER_SECRETS_BACKEND`` setting resolves it **inside the tool's tenant's namespace**:
``resolve(tenant_slug, reference)``. The default reads ``env:NAME`` of tenant ``acme`` from
``LEDGER_TENANT_ACME_NAME`` (or the file named by ``LEDGER_TENANT_ACME_NAME_FILE``), never the
raw process environment, so the portal's own settings (``DATABASE_URL``, ``SECRET_KEY``, the
signing key, cloud credentials) are unreachable by construction. A vault backend uses a path per
tenant the same way.

Errors name the reference (and where it was looked for), never a value, and ``scrub`` takes a
resolved secret out of any text before it can reach a log, a page, an error message or the ledger.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

REDACTED = "[secret]"
TENANT_PREFIX = "LEDGER_TENANT_"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class SecretError(Exception):
    """A secret reference that cannot be resolved (the message names the reference only)."""


class SecretsBackend(Protocol):
    def resolve(self, tenant_slug: str, reference: str) -> str: ...


def tenant_namespace(tenant_slug: str) -> str:
    """``acme`` -> ``LEDGER_TENANT_ACME_``; ``north-eu`` -> ``LEDGER_TENANT_NORTH_EU_``."""
    return f"{TENANT_PREFIX}{re.sub(r'[^A-Z0-9]', '_', tenant_slug.upper())}_"


def _overlapping(tenant_slug: str) -> list[str]:
    """The other tenants whose namespace nests with ``tenant_slug``'s.

    Slugs can prefix each other once mapped (``acme`` and ``acme-eu``): ``env:EU_TOKEN`` on
    acme and ``env:TOKEN`` on acme-eu would both read ``LEDGER_TENANT_ACME_EU_TOKEN``. Whichever
    tenant came first, neither may then read the other's secret: both are refused until the
    operator gives them distinct slugs (or a backend with a path per tenant)."""
    from core.models import Tenant

    own = tenant_namespace(tenant_slug)
    return sorted(slug for slug in Tenant.objects.exclude(slug=tenant_slug).values_list(
        "slug", flat=True) if tenant_namespace(slug).startswith(own)
        or own.startswith(tenant_namespace(slug)))


class EnvironmentSecrets:
    """``env:NAME`` of tenant ``acme`` -> ``LEDGER_TENANT_ACME_NAME`` (``..._FILE`` pointing at
    a file works too, as for every setting)."""

    scheme = "env"

    def resolve(self, tenant_slug: str, reference: str) -> str:
        scheme, _, name = reference.partition(":")
        if scheme != self.scheme or not _NAME.match(name) or name.upper().endswith("_FILE"):
            raise SecretError(f"secret reference {reference!r}: this backend resolves env:NAME "
                              "(letters, digits and underscores, not ending in _FILE)")
        variable = tenant_namespace(tenant_slug) + name
        overlapping = _overlapping(tenant_slug)
        if overlapping:
            raise SecretError(f"secret reference {reference!r}: the namespace "
                              f"{tenant_namespace(tenant_slug)} overlaps another tenant's "
                              f"({', '.join(overlapping)}), so its variables cannot be told "
                              "apart; the platform operator gives the tenants distinct slugs")
        file_name = os.environ.get(f"{variable}_FILE")
        if file_name:
            try:
                with open(file_name, encoding="utf-8") as handle:
                    return handle.read().strip()
            except OSError as exc:
                raise SecretError(f"secret reference {reference!r}: the file named by "
                                  f"{variable}_FILE cannot be read ({exc.strerror})") from None
        value = os.environ.get(variable)
        if not value:
            raise SecretError(f"secret reference {reference!r} is not set (the platform "
                              f"operator sets {variable} for this tenant)")
        return value


@lru_cache(maxsize=4)
def _backend(path: str) -> SecretsBackend:
    backend: SecretsBackend = import_string(path)()
    return backend


def secrets_backend() -> SecretsBackend:
    return _backend(settings.LEDGER_SECRETS_BACKEND)


def resolve_secret(tenant_slug: str, reference: str) -> str:
    """The credential ``reference`` names, looked up in ``tenant_slug``'s namespace only."""
    return secrets_backend().resolve(tenant_slug, reference)


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every given secret replaced by a marker."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
