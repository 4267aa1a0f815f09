"""Credentials for tools: resolved at call time from a reference, never stored in the database.

A tool names a secret reference (``env:BILLING_API_TOKEN``); the backend named by the
``LEDGER_SECRETS_BACKEND`` setting resolves it. The default reads the process environment; a
deployment plugs in its vault with a class that has ``resolve(reference) -> str``.

Errors name the reference, never a value, and ``scrub`` takes a resolved secret out of any text
before it can reach a log, a page, an error message or the ledger.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string

REDACTED = "[secret]"


class SecretError(Exception):
    """A secret reference that cannot be resolved (the message names the reference only)."""


class SecretsBackend(Protocol):
    def resolve(self, reference: str) -> str: ...


class EnvironmentSecrets:
    """``env:NAME`` -> the environment variable NAME (``NAME_FILE`` pointing at a file works
    too, as for every setting)."""

    scheme = "env"

    def resolve(self, reference: str) -> str:
        scheme, _, name = reference.partition(":")
        if scheme != self.scheme or not name:
            raise SecretError(f"secret reference {reference!r}: this backend resolves env:NAME")
        file_name = os.environ.get(f"{name}_FILE")
        if file_name:
            try:
                with open(file_name, encoding="utf-8") as handle:
                    return handle.read().strip()
            except OSError as exc:
                raise SecretError(f"secret reference {reference!r}: its file cannot be read "
                                  f"({exc.strerror})") from None
        value = os.environ.get(name)
        if not value:
            raise SecretError(f"secret reference {reference!r} is not set")
        return value


@lru_cache(maxsize=4)
def _backend(path: str) -> SecretsBackend:
    backend: SecretsBackend = import_string(path)()
    return backend


def secrets_backend() -> SecretsBackend:
    return _backend(settings.LEDGER_SECRETS_BACKEND)


def resolve_secret(reference: str) -> str:
    return secrets_backend().resolve(reference)


def scrub(text: str, *secrets: str) -> str:
    """``text`` with every given secret replaced by a marker."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
