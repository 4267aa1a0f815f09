"""Recording runs through the client into a live portal: batches, order, the chain."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from core.models import Tenant
from runs.integrity import verify_tenant
from runs.models import Annotation, ModelCall, Run, Step, ToolCall


def timeline(run_id: str) -> list[tuple[str, str]]:
    run = Run.objects.get(run_id=run_id)
    records = [*((s.seq, "step", s.step_id) for s in Step.objects.filter(run=run)),
               *((m.seq, "model_call", m.call_id) for m in ModelCall.objects.filter(run=run)),
               *((t.seq, "tool_call", t.call_id) for t in ToolCall.objects.filter(run=run)),
               *((a.seq, "annotation", a.annotation_kind)
                 for a in Annotation.objects.filter(run=run))]
    records.sort()
    assert [seq for seq, _, _ in records] == list(range(1, run.last_seq + 1))
    return [(kind, ident) for _, kind, ident in records]


def test_many_records_arrive_in_few_requests_in_order_with_the_chain_intact(
        make_client: Any, proxy: Any, acme: Tenant) -> None:
    proxy.up()
    client = make_client(proxy.url, flush_interval=3600, max_batch_records=500)
    recorded: list[tuple[str, str]] = []
    with client.run(agent_id="support-bot", goal="answer three tickets",
                    trigger_ref="REQ-7") as run:
        for ticket in range(3):
            with run.step(f"ticket {ticket}") as step:
                recorded.append(("step", step.step_id))
                for i in range(100):
                    recorded.append(("model_call", run.model_call(
                        "gpt-4.1", provider="openai",
                        messages=[{"role": "user", "content": f"ticket {ticket} #{i}"}],
                        response="ok", input_tokens=10, output_tokens=2)))
                    with run.tool_call("lookup", action_class="read",
                                       input={"ticket": ticket, "i": i}) as call:
                        call.output = {"found": True}
                    recorded.append(("tool_call", call.call_id))
    assert client.flush(timeout=30)

    records = len(recorded) + 1  # and the run
    stats = client.stats()
    assert stats.delivered == len(recorded)
    assert stats.dropped == stats.rejected == stats.buffered == 0
    # 604 records with at most 500 a batch: two batches, nothing sent before that.
    assert records > 500
    assert stats.requests == proxy.connections == 2

    stored = Run.objects.get(run_id=run.run_id)
    assert (stored.status, stored.goal, stored.trigger_ref) == (
        "succeeded", "answer three tickets", "REQ-7")
    assert timeline(run.run_id) == [*recorded, ("annotation", "run_status")]
    assert verify_tenant(acme).intact


def test_a_run_spread_over_many_batches_keeps_one_chain(make_client: Any,
                                                         acme: Tenant) -> None:
    client = make_client(max_batch_records=8, flush_interval=0.01)
    calls = []
    with client.run(agent_id="support-bot", goal="a long run") as run:
        for i in range(60):
            with run.tool_call("lookup", action_class="read", input={"i": i}) as call:
                call.output = i
            calls.append(("tool_call", call.call_id))
    assert client.flush(timeout=30)
    assert client.stats().requests >= 60 // 7
    assert timeline(run.run_id) == [*calls, ("annotation", "run_status")]
    assert Run.objects.get(run_id=run.run_id).status == "succeeded"
    assert verify_tenant(acme).intact


def test_a_tool_call_can_carry_the_tool_s_own_call_id(make_client: Any,
                                                      acme: Tenant) -> None:
    client = make_client()
    with client.run(agent_id="support-bot", goal="tool call ids") as run:
        with run.tool_call("lookup", action_class="read", tool_call_ref="call_abc") as given:
            given.output = 1
        with run.tool_call("lookup", action_class="read") as plain:
            plain.output = 2
    assert client.flush(timeout=30)
    stored = {c.call_id: c.tool_call_ref for c in ToolCall.objects.filter(run__run_id=run.run_id)}
    assert stored == {given.call_id: "call_abc", plain.call_id: ""}
    assert verify_tenant(acme).intact
    with pytest.raises(ValueError, match="tool_call_ref"), client.run(agent_id="x") as other:
        other.tool_call("lookup", action_class="read", tool_call_ref="x" * 201)


def test_what_a_record_holds_and_how_errors_are_kept(make_client: Any, acme: Tenant) -> None:
    client = make_client()
    seen: dict[str, Any] = {}

    def agent() -> None:
        with client.run(agent_id="support-bot", goal="reply", metadata={"ticket": "T-1"}
                        ) as run, run.step("send the reply") as step:
            seen.update(run=run, step=step)
            with run.timed_model_call("gpt-4.1", provider="openai",
                                      messages=[{"role": "user", "content": "hi"}]) as mc:
                mc.response, mc.input_tokens, mc.output_tokens = "hello", 3, 1
            seen["mc"] = mc
            with run.tool_call("send_email", action_class="exfil",
                               input={"to": "ada@example.com"},
                               classifications={"input.to": "confidential"}) as call:
                seen["call"] = call
                raise ConnectionError("smtp down")

    with pytest.raises(ConnectionError, match="smtp down"):
        agent()
    run, step, mc, call = seen["run"], seen["step"], seen["mc"], seen["call"]
    assert client.flush(timeout=30)

    stored = Run.objects.get(run_id=run.run_id)
    assert stored.status == "failed"
    assert stored.metadata == {"ticket": "T-1"}
    db_step = Step.objects.get(run=stored)
    assert (db_step.step_id, db_step.index, db_step.title, db_step.status) == (
        step.step_id, 0, "send the reply", "failed")
    assert db_step.started_at is not None
    assert db_step.ended_at is not None
    assert db_step.started_at <= db_step.ended_at
    model_call = ModelCall.objects.get(call_id=mc.call_id)
    assert (model_call.step_id, model_call.response, model_call.input_tokens) == (
        db_step.pk, "hello", 3)
    tool_call = ToolCall.objects.get(call_id=call.call_id)
    assert tool_call.status == "failed"
    assert tool_call.error == {"type": "ConnectionError", "message": "smtp down"}
    assert tool_call.classifications == {"input.to": "confidential"}
    assert tool_call.step_id == db_step.pk
    assert tool_call.duration_ms is not None


def test_a_record_the_portal_refuses_is_logged_with_its_path_and_costs_no_other(
        make_client: Any, proxy: Any, acme: Tenant, caplog: Any) -> None:
    proxy.up()
    client = make_client(proxy.url, flush_interval=3600)
    with client.run(agent_id="support-bot", goal="good") as good:
        for i in range(3):
            with good.tool_call("lookup", action_class="read", input={"i": i}):
                pass
    with client.run(agent_id="support-bot", goal="one bad record") as bad:
        fine = bad.model_call("gpt-4.1", response="fine")
        bad.model_call("gpt-4.1", response="x", classifications={"not a path!": "secret"})
    with caplog.at_level(logging.ERROR, logger="ledger_client"):
        assert client.flush(timeout=30)

    assert client.stats().rejected == 1
    assert ToolCall.objects.filter(run__run_id=good.run_id).count() == 3
    assert list(ModelCall.objects.filter(run__run_id=bad.run_id).values_list(
        "call_id", flat=True)) == [fine]
    assert Run.objects.get(run_id=bad.run_id).status == "succeeded"
    [message] = [r.getMessage() for r in caplog.records]
    assert "HTTP 400" in message
    assert "runs[0].model_calls[0].classifications" in message
    assert bad.run_id in message


def test_a_step_too_big_for_one_batch_is_sent_early_and_its_end_noted(make_client: Any,
                                                                       acme: Tenant) -> None:
    client = make_client(max_batch_records=10)
    calls = []
    with client.run(agent_id="support-bot", goal="a big step") as run, run.step(
            "look everything up") as step:
        for i in range(25):
            with run.tool_call("lookup", action_class="read", input={"i": i}) as call:
                pass
            calls.append(call.call_id)
    assert client.flush(timeout=30)
    stored_step = Step.objects.get(run__run_id=run.run_id)
    assert (stored_step.step_id, stored_step.status, stored_step.ended_at) == (
        step.step_id, "", None)
    assert list(ToolCall.objects.filter(run__run_id=run.run_id).order_by("seq").values_list(
        "call_id", "step_id")) == [(c, stored_step.pk) for c in calls]
    note = Annotation.objects.get(run__run_id=run.run_id, annotation_kind="note")
    assert note.data["step_id"] == step.step_id
    assert note.data["status"] == "succeeded"
    assert verify_tenant(acme).intact
