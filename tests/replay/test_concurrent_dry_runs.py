"""A tool that declares concurrent dry-runs safe (``Tool.dry_run_concurrency`` N > 1) gets up
to N of a sandbox replay's dry-runs in flight at once; the replay still records its steps in
order, each with its own output and decision. A tool without that opt-in, and every live
replay, gets one call at a time.

The tool server counts the requests in flight (not timings): each request waits, up to a
bound, for as many others as the test allows to arrive, so overlap is seen when it is allowed
and never invented when it is not."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from operations.models import ReplayStep
from operations.replay import start_replay
from policies.models import Decision
from runs.models import Tool

from .scenario import T0, allow_everything, approve, stored_run, walk
from .toolservers import Seen, ToolServer, http_tool_server

pytestmark = pytest.mark.django_db

RUN_ID = "run-many-lookups"
CALLS = 9


class InFlight:
    """A handler that counts concurrent requests and answers each with its own input."""

    def __init__(self, wait_for: int, patience_s: float = 0.3) -> None:
        self.wait_for, self.patience_s = wait_for, patience_s
        self.now = self.most = 0
        self.changed = threading.Condition()

    def __call__(self, seen: Seen) -> tuple[int, Any]:
        with self.changed:
            self.now += 1
            self.most = max(self.most, self.now)
            self.changed.notify_all()
            # Hold this request until `wait_for` are in flight (or patience runs out), so
            # concurrent requests really overlap at the server.
            self.changed.wait_for(lambda: self.now >= self.wait_for, timeout=self.patience_s)
        with self.changed:
            self.now -= 1
            self.changed.notify_all()
        return 200, {"customer_id": seen.body["customer_id"],
                     "dry_run": seen.header("X-Dry-Run") == "true"}


def many_lookups() -> dict[str, Any]:
    return {
        "run_id": RUN_ID, "agent_id": "billing-agent", "goal": "look up many customers",
        "started_at": T0, "status": "succeeded",
        "steps": [{"step_id": "s1", "index": 1, "title": "look up"}],
        "tool_calls": [
            {"call_id": f"{RUN_ID}-c{i}", "step_id": "s1", "tool": "lookup_customer",
             "action_class": "read", "input": {"customer_id": f"cust-{i}"},
             "output": {"customer_id": f"cust-{i}", "dry_run": True}, "status": "succeeded",
             "started_at": T0}
            for i in range(1, CALLS + 1)],
    }


@pytest.fixture
def server() -> Iterator[ToolServer]:
    with http_tool_server() as serving:
        yield serving


def wire(acme: Any, server: ToolServer, handler: InFlight, concurrency: int) -> Tool:
    Tool.objects.filter(tenant=acme, name="lookup_customer").update(
        connector="http", endpoint=server.route("/lookup", handler), dry_run_via="header",
        dry_run_name="X-Dry-Run", supports_idempotency=True, dry_run_concurrency=concurrency)
    return Tool.objects.get(tenant=acme, name="lookup_customer")


@pytest.fixture
def recorded(acme: Any, record: Any) -> None:
    record(acme, many_lookups())
    allow_everything(acme)


def assert_recorded_in_order(replay: Any) -> None:
    assert replay.status == "succeeded", replay.failure_reason
    assert (replay.steps_done, replay.divergent_steps) == (CALLS, 0)
    steps = list(ReplayStep.objects.filter(replay=replay).select_related("decision")
                 .order_by("seq"))
    assert [(s.seq, s.call_id, s.mode_used, s.output) for s in steps] == [
        (i, f"{RUN_ID}-c{i}", "dry_run", {"customer_id": f"cust-{i}", "dry_run": True})
        for i in range(1, CALLS + 1)]
    assert [getattr(s.decision, "call_id", None) for s in steps] == [s.call_id for s in steps]
    assert Decision.objects.filter(run_id=RUN_ID).count() == CALLS  # one each, none twice


@pytest.mark.parametrize("concurrency", [2, 4])
def test_a_tool_that_allows_it_gets_up_to_its_bound_of_dry_runs_at_once(
        acme, alice, recorded, server, concurrency):
    handler = InFlight(wait_for=concurrency)
    wire(acme, server, handler, concurrency)
    replay = walk(start_replay(stored_run(acme, RUN_ID), by=alice))
    assert_recorded_in_order(replay)
    assert 1 < handler.most <= concurrency
    assert len(server.requests_to("/lookup")) == CALLS


def test_concurrent_dry_runs_keep_the_order_across_groups(acme, alice, recorded, server,
                                                          monkeypatch):
    from operations import replay as replay_module

    monkeypatch.setattr(replay_module, "SANDBOX_GROUP_STEPS", 4)  # 4 + 4 + 1
    handler = InFlight(wait_for=3)
    wire(acme, server, handler, 3)
    assert_recorded_in_order(walk(start_replay(stored_run(acme, RUN_ID), by=alice)))
    assert 1 < handler.most <= 3


def test_a_tool_without_the_opt_in_gets_one_dry_run_at_a_time(acme, alice, recorded, server):
    handler = InFlight(wait_for=2, patience_s=0.1)
    tool = wire(acme, server, handler, 1)
    assert Tool._meta.get_field("dry_run_concurrency").default == 1
    assert tool.dry_run_concurrency == 1
    replay = walk(start_replay(stored_run(acme, RUN_ID), by=alice))
    assert_recorded_in_order(replay)
    assert handler.most == 1


def test_a_live_replay_never_sends_calls_concurrently(acme, alice, recorded, server):
    handler = InFlight(wait_for=2, patience_s=0.1)
    wire(acme, server, handler, 4)
    replay: Any = start_replay(stored_run(acme, RUN_ID), by=alice, mode="live")
    approve(replay.approval)
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    assert len(server.requests_to("/lookup")) == CALLS
    assert all(s.header("X-Dry-Run") is None for s in server.requests_to("/lookup"))
    assert handler.most == 1


def test_a_failing_call_mid_group_keeps_the_dry_runs_sent_before_it(acme, alice, record,
                                                                    server):
    run = many_lookups()
    run["tool_calls"][4]["input"] = "not an object"  # a JSON-flag dry-run cannot be asked
    record(acme, run)
    allow_everything(acme)
    handler = InFlight(wait_for=3)
    Tool.objects.filter(tenant=acme, name="lookup_customer").update(
        connector="http", endpoint=server.route("/lookup", handler), dry_run_via="flag",
        dry_run_name="dry_run", dry_run_concurrency=3)
    replay = walk(start_replay(stored_run(acme, RUN_ID), by=alice))
    assert replay.status == "failed"
    assert "not an object" in replay.failure_reason
    assert replay.steps_done == 4
    assert list(ReplayStep.objects.filter(replay=replay).order_by("seq").values_list(
        "seq", "status")) == [(i, "succeeded") for i in range(1, 5)]


@pytest.mark.parametrize(("fields", "field"), [
    ({"dry_run_concurrency": 0}, "dry_run_concurrency"),
    ({"dry_run_concurrency": 1000}, "dry_run_concurrency"),
    ({"dry_run_concurrency": 4, "dry_run_via": "none", "dry_run_name": ""},
     "dry_run_concurrency"),
    ({"dry_run_concurrency": 4, "endpoint": "", "stdio_server": "echo", "connector": "mcp",
      "dry_run_via": "flag"}, "dry_run_concurrency"),
])
def test_the_bound_is_validated(acme, fields, field, settings):
    settings.LEDGER_MCP_STDIO_COMMANDS = {"echo": {"argv": ["/bin/true"]}}
    tool = Tool(tenant=acme, name="lookup", connector="http", endpoint="http://127.0.0.1:1/x",
                dry_run_via="header", dry_run_name="X-Dry-Run")
    for name, value in fields.items():
        setattr(tool, name, value)
    with pytest.raises(ValidationError) as refused:
        tool.full_clean()
    assert field in refused.value.message_dict


def test_a_bounded_opt_in_on_a_network_tool_with_a_dry_run_is_valid(acme):
    Tool(tenant=acme, name="lookup", connector="http", endpoint="http://127.0.0.1:1/x",
         dry_run_via="header", dry_run_name="X-Dry-Run", dry_run_concurrency=8).full_clean()


def test_concurrent_dry_runs_carry_the_credential_and_never_record_it(
        acme, alice, recorded, server, billing_token):
    def leaky(seen: Seen) -> tuple[int, Any]:
        return handler(seen)[0], {"customer_id": seen.body["customer_id"], "dry_run": True,
                                  "token": seen.header("Authorization")}

    handler = InFlight(wait_for=3)
    wire(acme, server, handler, 3)
    Tool.objects.filter(tenant=acme, name="lookup_customer").update(
        endpoint=server.route("/leaky", leaky), secret_ref="env:BILLING_API_TOKEN")
    replay = walk(start_replay(stored_run(acme, RUN_ID), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    assert 1 < handler.most <= 3
    sent = server.requests_to("/leaky")
    assert [s.header("Authorization") for s in sent] == [f"Bearer {billing_token}"] * CALLS
    outputs = list(ReplayStep.objects.filter(replay=replay).order_by("seq")
                   .values_list("output", flat=True))
    assert len(outputs) == CALLS
    assert billing_token not in str(outputs)
    assert [(o or {}).get("token") for o in outputs] == ["Bearer [secret]"] * CALLS


def test_concurrent_dry_runs_to_a_destination_egress_refuses_send_nothing(
        acme, alice, recorded, server, settings):
    handler = InFlight(wait_for=3)
    wire(acme, server, handler, 3)
    settings.LEDGER_EGRESS_ALLOW = ["tools.internal"]
    replay = walk(start_replay(stored_run(acme, RUN_ID), by=alice))
    assert server.seen == []
    steps = list(ReplayStep.objects.filter(replay=replay).order_by("seq"))
    assert [(s.seq, s.status) for s in steps] == [(i, "failed") for i in range(1, CALLS + 1)]
    assert all("127.0.0.1" in s.error for s in steps)
