"""Small hand-made runs whose tool calls' action classes the tests choose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from core.models import Tenant

STARTED = "2025-03-01T10:00:00+00:00"


def run_with_calls(run_id: str, calls: list[tuple[str, str]], *, status: str = "succeeded",
                   supports_rollback: bool = False) -> dict[str, Any]:
    """A run whose tool calls are ``(tool, action_class)``, in order, all ``status``; with
    ``supports_rollback`` its non-read calls declare a compensate hook."""
    return {
        "run_id": run_id, "agent_id": "support-bot", "goal": f"goal of {run_id}",
        "status": "succeeded", "started_at": STARTED, "ended_at": "2025-03-01T10:05:00+00:00",
        "tool_calls": [{
            "call_id": f"{run_id}-c{i}", "tool": tool, "action_class": action,
            "input": {"n": i}, "output": {"ok": True, "n": i}, "status": status,
            "started_at": f"2025-03-01T10:0{min(i, 4)}:00+00:00",
            "ended_at": f"2025-03-01T10:0{min(i, 4)}:30+00:00",
            "idempotency_key": f"{run_id}-key-{i}",
            "supports_rollback": supports_rollback and action != "read",
        } for i, (tool, action) in enumerate(calls, start=1)],
    }


@pytest.fixture
def recorded(record: Callable[..., Any]) -> Callable[..., dict[str, Any]]:
    def make(tenant: Tenant, run_id: str, calls: list[tuple[str, str]], **kwargs: Any
             ) -> dict[str, Any]:
        run = run_with_calls(run_id, calls, **kwargs)
        record(tenant, run)
        return run
    return make


@pytest.fixture
def contacts(settings: Any) -> Any:
    settings.LEDGER_SECURITY_CONTACTS = ["security@acme.example"]
    settings.LEDGER_DATA_OWNER_CONTACTS = ["dpo@acme.example"]
    settings.LEDGER_INCIDENT_CONTACTS = {}
    settings.LEDGER_INCIDENT_NOTIFIER = "incidents.notify.EmailNotifier"
    return settings


@pytest.fixture
def published_version(acme: Tenant, alice: Any) -> Any:
    """A published version of acme's ``tools`` policy (written by alice, published by dave)."""
    from django.contrib.auth.models import User

    from core.services import grant_role
    from policies.models import Policy
    from policies.services import create_draft, publish_policy_version

    dave = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
    grant_role(dave, "manage_policies", acme)
    policy = Policy.objects.create(tenant=acme, name="tools")
    return publish_policy_version(create_draft(policy, by=alice, change_note="allow all"), by=dave)
