"""Planted platform secrets and real loopback tool servers for the secrets and egress tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.replay.toolservers import Seen, ToolServer, http_tool_server

PLANTED_DATABASE_URL = "postgres://ledger:Pl4nted-db-pa55word@db.internal:5432/ledger"
PLANTED_SECRET_KEY = "pl4nted-signing-key-0123456789abcdef"
TENANT_TOKEN = "tok-acme-own-billing-77"


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with http_tool_server() as server:
        yield server


@pytest.fixture
def platform_secrets(monkeypatch: Any, settings: Any) -> list[str]:
    """The portal's own secrets in its process environment, as in production."""
    import os

    # On PostgreSQL runs DATABASE_URL is the real one the tests use: it must not leak either.
    if "DATABASE_URL" not in os.environ:
        monkeypatch.setenv("DATABASE_URL", PLANTED_DATABASE_URL)
    monkeypatch.setenv("SECRET_KEY", PLANTED_SECRET_KEY)
    return [os.environ["DATABASE_URL"], PLANTED_SECRET_KEY, settings.SECRET_KEY]


def leaked(server: ToolServer, secrets: list[str]) -> list[str]:
    """Every planted secret that reached the server, in any header or body."""
    seen: list[Seen] = list(server.seen)
    text = repr([(s.path, s.headers, s.body) for s in seen])
    return [secret for secret in secrets if secret and secret in text]


# Rollback fixtures (a compensable refund tool on the loopback server, eager Celery).
from tests.rollback.conftest import compensating, eager, refunds  # noqa: E402, F401
