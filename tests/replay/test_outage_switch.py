"""Switching outage mode with ``ledger outage`` (the service the API and admin share) acts on
replays at once: a running live replay goes on in sandbox, a new live one is refused until a
request to leave sandbox is approved. The fixtures and helpers are test_replay.py's."""

from __future__ import annotations

from typing import Any

import pytest

from approvals.models import ApprovalRequest, Kind
from core.cli_support import EXIT_OK
from ledger_portal.cli import main
from operations.models import ReplayStep
from operations.replay import ReplayRefused, start_replay

from .scenario import RUN_ID, allow_everything, approve, recorded_run, stored_run, walk, wire_tools

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(acme, record, tool_server):
    record(acme, recorded_run())
    return wire_tools(acme, tool_server)


def outage(state: str, reason: str = "primary DB failover") -> None:
    assert main(["--as", "alice", "outage", "--tenant", "acme", state, "--reason",
                 reason]) == EXIT_OK


def test_ledger_outage_on_forces_a_running_live_replay_into_sandbox(acme, alice, recorded,
                                                                    tool_server):
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme), by=alice, mode="live")
    approve(replay.approval)
    outage("on")
    replay = walk(replay)
    assert set(ReplayStep.objects.filter(replay=replay).values_list("mode_used", flat=True)) \
        == {"dry_run", "stub"}
    assert tool_server.requests_to("/email") == []


def test_in_outage_a_live_replay_waits_for_leave_sandbox_and_off_lifts_that(acme, alice,
                                                                            recorded):
    outage("on")
    with pytest.raises(ReplayRefused, match="outage mode: replays run in sandbox only"):
        start_replay(stored_run(acme), by=alice, mode="live")
    assert ApprovalRequest.objects.filter(tenant=acme, kind=Kind.LEAVE_SANDBOX,
                                          run_id=RUN_ID).exists()
    outage("off", "failover done")
    replay = start_replay(stored_run(acme), by=alice, mode="live")
    assert replay.approval is not None
    assert replay.approval.kind == Kind.LIVE_REPLAY
