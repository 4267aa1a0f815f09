"""Rollback fixtures: a real HTTP tool on loopback with a compensate endpoint, recorded runs
that called it, and Celery running tasks in process (eagerly) where no worker is involved."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.models import Tenant
from runs.models import Tool
from tests.incidents.conftest import run_with_calls
from tests.replay.toolservers import Seen, ToolServer, http_tool_server

COMPENSATE = "/refund/compensate"


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    with http_tool_server() as server:
        yield server


class Script:
    """What the compensate endpoint answers, in order; the last answer repeats."""

    def __init__(self, *answers: tuple[int, Any]):
        self.answers = list(answers) or [(200, {"compensated": True})]
        self.lock = threading.Lock()

    def __call__(self, seen: Seen) -> tuple[int, Any]:
        with self.lock:
            return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def rollbacks_allowed(tenant: Tenant) -> None:
    """A published policy allowing everything, rollbacks included (a compensation passes the
    policy like any call; without a policy it would wait for a person)."""
    from policies.models import Policy
    from tests.replay.scenario import allow_everything

    if not Policy.objects.filter(tenant=tenant, name="replays-allowed").exists():
        allow_everything(tenant)


@pytest.fixture
def compensating(tool_server: ToolServer) -> Callable[..., Tool]:
    """Make a tool of acme compensable through the loopback server, answering ``answers``;
    its tenant's policy allows rollbacks."""
    def make(tool: Tool, *answers: tuple[int, Any]) -> Tool:
        rollbacks_allowed(tool.tenant)
        url = tool_server.route(f"/{tool.name}/compensate", Script(*answers))
        tool.connector, tool.endpoint = "http", f"{tool_server.url}/{tool.name}"
        tool.compensate_endpoint, tool.supports_rollback = url, True
        tool.timeout_ms = 5000
        tool.save()
        return tool
    return make


@pytest.fixture
def refunds(acme: Tenant, record: Callable[..., Any]) -> dict[str, Any]:
    """A run with a read, then three refunds (compensable, once configured)."""
    run = run_with_calls("run-refunds", [("get_customer", "read"), ("refund_payment", "write"),
                                         ("refund_payment", "write"),
                                         ("refund_payment", "write")], supports_rollback=True)
    record(acme, run)
    return run


@pytest.fixture
def eager(settings: Any) -> Iterator[None]:
    """Tasks run in process when queued (no worker), retries included."""
    from tests.celery_conf import celery_conf

    settings.LEDGER_ROLLBACK_BACKOFF_MS = 10
    with celery_conf(task_always_eager=True):
        yield
