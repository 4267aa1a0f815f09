"""A recorded run of three plan steps and the tools it called, wired to loopback servers."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from core.services import grant_role
from operations.replay import execute_replay
from policies.models import Policy
from policies.services import create_draft, publish_policy_version
from runs.models import Run, Tool

from .toolservers import Seen, ToolServer

RUN_ID = "run-refund-42"
T0 = "2026-01-05T10:00:00+00:00"
RECORDED: dict[str, dict[str, Any]] = {
    "c1": {"customer_id": "cust-1", "name": "Ada", "fetched_at": "2026-01-05T10:00:01Z"},
    "c2": {"refund_id": "r-77", "amount_cents": 500, "state": "refunded"},
    "c3": {"sent": True, "message_id": "m-1"},
}


def recorded_run(run_id: str = RUN_ID) -> dict[str, Any]:
    def call(call_id: str, step: str, tool: str, action: str, args: dict[str, Any],
             key: str = "") -> dict[str, Any]:
        return {"call_id": f"{run_id}-{call_id}", "step_id": step, "tool": tool,
                "action_class": action, "input": args, "output": RECORDED[call_id],
                "status": "succeeded", "idempotency_key": key, "started_at": T0}

    return {
        "run_id": run_id, "agent_id": "billing-agent", "goal": "refund a duplicate charge",
        "started_at": T0, "status": "succeeded", "ended_at": "2026-01-05T10:01:00+00:00",
        "steps": [{"step_id": f"s{i}", "index": i, "title": t} for i, t in
                  ((1, "look up"), (2, "refund"), (3, "tell the customer"))],
        "tool_calls": [
            call("c1", "s1", "lookup_customer", "read", {"customer_id": "cust-1"}),
            call("c2", "s2", "refund_payment", "write", {"charge": "ch-9", "amount_cents": 500},
                 key=f"idem-{run_id}-c2"),
            call("c3", "s3", "send_email", "exfil", {"to": "ada@example.com"}),
        ],
    }


def same_as_recorded(call_id: str, **changes: Any) -> Any:
    """A handler answering the recorded output (with changes), e.g. for dry runs."""

    def answer(seen: Seen) -> tuple[int, Any]:
        return 200, {**RECORDED[call_id], **changes}

    return answer


def wire_tools(tenant: Any, server: ToolServer, **overrides: dict[str, Any]) -> dict[str, Tool]:
    """lookup_customer: HTTP with a dry-run header; refund_payment: HTTP with a dry-run flag,
    idempotent; send_email: HTTP without any dry-run (never called in sandbox)."""
    config: dict[str, dict[str, Any]] = {
        "lookup_customer": {"connector": "http", "endpoint": server.route(
            "/lookup", same_as_recorded("c1", fetched_at="2026-02-01T00:00:00Z")),
            "dry_run_via": "header", "dry_run_name": "X-Dry-Run",
            "volatile_fields": ["fetched_at"], "supports_idempotency": True},
        "refund_payment": {"connector": "http", "endpoint": server.route(
            "/refund", same_as_recorded("c2")), "dry_run_via": "flag",
            "dry_run_name": "dry_run", "supports_idempotency": True},
        "send_email": {"connector": "http", "endpoint": server.route(
            "/email", same_as_recorded("c3"))},
    }
    tools = {}
    for name, fields in config.items():
        fields.update(overrides.get(name, {}))
        Tool.objects.filter(tenant=tenant, name=name).update(**fields)
        tools[name] = Tool.objects.get(tenant=tenant, name=name)
    return tools


def allow_everything(tenant: Any) -> Any:
    policy = Policy.objects.create(tenant=tenant, name="replays-allowed")
    publisher = User.objects.create_user(f"publisher-{tenant.slug}")
    grant_role(publisher, "manage_policies", tenant)
    return publish_policy_version(create_draft(policy, by=None, change_note="allow all"),
                                  by=publisher)


def approver(tenant: Any, name: str = "dana") -> User:
    user = User.objects.create_user(name, is_staff=True)
    grant_role(user, "approve", tenant)
    return user


def approve(request: Any) -> Any:
    """Approve with as many distinct approvers as the request needs (exfil needs two)."""
    from approvals.services import decide_approval

    for i in range(request.approvals_needed):
        request = decide_approval(request,
                                  by=approver(request.tenant, f"approver-{request.pk}-{i}"),
                                  approve=True, justification="checked")
    return request


def walk(replay: Any) -> Any:
    """What the worker does with the replay's current message."""
    replay.refresh_from_db()
    execute_replay(replay.pk, replay.task_id)
    replay.refresh_from_db()
    return replay


def stored_run(tenant: Any, run_id: str = RUN_ID) -> Run:
    return Run.objects.select_related("tenant", "agent").get(tenant=tenant, run_id=run_id)
