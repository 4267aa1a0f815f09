"""The client refuses an id the portal would refuse, at the call that names it, with a clear
error: a poison id never reaches the queue (where it would cost its whole batch)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger_client import LedgerClient


@pytest.fixture
def offline_client() -> Iterator[LedgerClient]:
    """A client of no portal (nothing listens on the discard port): what these tests check
    happens before anything is sent, and what is queued is dropped at once on close instead
    of being retried for the usual five seconds."""
    offline = LedgerClient("http://127.0.0.1:9", "lpk_x_y", close_at_exit=False)
    yield offline
    offline.close(timeout=0)


@pytest.mark.parametrize("bad", ["a/b", "a#b", "a b", "a\r\nb", "a\x00b"])
def test_an_odd_run_or_agent_id_is_a_value_error_naming_the_field(offline_client: LedgerClient,
                                                                  bad: str) -> None:
    with pytest.raises(ValueError, match="run_id"):
        offline_client.run(agent_id="bot", run_id=bad)
    with pytest.raises(ValueError, match="agent_id"):
        offline_client.run(agent_id=bad)
    with pytest.raises(ValueError, match="trigger_ref"):
        offline_client.run(agent_id="bot", trigger_ref=bad)


@pytest.mark.parametrize("field", ["call_id", "idempotency_key", "tool_call_ref"])
def test_an_odd_tool_call_id_is_a_value_error_naming_the_field(offline_client: LedgerClient,
                                                               field: str) -> None:
    run = offline_client.run(agent_id="bot")
    odd: dict[str, Any] = {field: "x /y"}  # one of the string keyword arguments
    with pytest.raises(ValueError, match=field):
        run.tool_call("lookup", action_class="read", **odd)
    run.end("succeeded")


def test_a_model_name_with_a_slash_is_still_fine(offline_client: LedgerClient) -> None:
    with offline_client.run(agent_id="bot", run_id="otel-abc-01:x@y.z") as run:
        run.model_call("models/gemini-1.5", response="ok")
