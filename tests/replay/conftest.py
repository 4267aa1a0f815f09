from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .toolservers import ToolServer, http_tool_server

TOKEN = "tok-Sup3rSecret-billing-42"


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with http_tool_server() as server:
        yield server


@pytest.fixture
def billing_token(monkeypatch: Any) -> str:
    monkeypatch.setenv("LEDGER_TENANT_ACME_BILLING_API_TOKEN", TOKEN)  # acme's namespace
    return TOKEN
