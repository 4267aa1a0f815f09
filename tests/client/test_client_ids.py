"""The client refuses an id the portal would refuse, at the call that names it, with a clear
error: a poison id never reaches the queue (where it would cost its whole batch)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.mark.parametrize("bad", ["a/b", "a#b", "a b", "a\r\nb", "a\x00b"])
def test_an_odd_run_or_agent_id_is_a_value_error_naming_the_field(make_client: Any,
                                                                  bad: str) -> None:
    client = make_client("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="run_id"):
        client.run(agent_id="bot", run_id=bad)
    with pytest.raises(ValueError, match="agent_id"):
        client.run(agent_id=bad)
    with pytest.raises(ValueError, match="trigger_ref"):
        client.run(agent_id="bot", trigger_ref=bad)


@pytest.mark.parametrize("field", ["call_id", "idempotency_key", "tool_call_ref"])
def test_an_odd_tool_call_id_is_a_value_error_naming_the_field(make_client: Any,
                                                               field: str) -> None:
    client = make_client("http://127.0.0.1:9")
    run = client.run(agent_id="bot")
    with pytest.raises(ValueError, match=field):
        run.tool_call("lookup", action_class="read", **{field: "x /y"})
    run.end("succeeded")


def test_a_model_name_with_a_slash_is_still_fine(make_client: Any) -> None:
    client = make_client("http://127.0.0.1:9")
    with client.run(agent_id="bot", run_id="otel-abc-01:x@y.z") as run:
        run.model_call("models/gemini-1.5", response="ok")
