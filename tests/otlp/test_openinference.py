"""OpenInference (Arize Phoenix's convention) is read like GenAI: its agent, chain, LLM and tool
spans become the run, steps, model calls and tool calls; retrievers, embedders, rerankers,
guardrails and evaluators become labelled notes on the run. Attribute names are those of the
``openinference-semantic-conventions`` package."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runs.integrity import verify_tenant
from runs.models import Annotation, ModelCall, OtlpSpan, Run, Step, Tool, ToolCall
from runs.otlp.assembly import run_id_for

from . import spans as s

pytestmark = pytest.mark.django_db

KIND = "openinference.span.kind"


def _messages(prefix: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Messages flattened as OpenInference instrumentations set them, one attribute a leaf."""
    out: dict[str, Any] = {}
    for i, message in enumerate(messages):
        for key, value in message.items():
            if key == "tool_calls":
                for j, call in enumerate(value):
                    at = f"{prefix}.{i}.message.tool_calls.{j}.tool_call"
                    out[f"{at}.id"] = call["id"]
                    out[f"{at}.function.name"] = call["name"]
                    out[f"{at}.function.arguments"] = json.dumps(call["arguments"])
            else:
                out[f"{prefix}.{i}.message.{key}"] = value
    return out


def support_trace(trace_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """AGENT (root) > LLM (asks for a tool) > TOOL > CHAIN (nested: a step) > RETRIEVER."""
    trace_id = trace_id or s.new_trace_id()
    agent = s.span(trace_id, "support-agent", {
        KIND: "AGENT", "agent.name": "support-agent", "session.id": "sess-7",
        "user.id": "user-3", "input.value": "Where is order 42?", "input.mime_type": "text/plain",
        "output.value": "Order 42 ships tomorrow.", "output.mime_type": "text/plain"},
        start_ms=0, end_ms=900)
    llm = s.span(trace_id, "ChatCompletion", {
        KIND: "LLM", "llm.model_name": "gpt-4o-mini-2024-07-18", "llm.provider": "openai",
        "llm.system": "openai", "llm.token_count.prompt": 50,
        "llm.token_count.completion": 12, "llm.token_count.total": 62,
        "llm.invocation_parameters": json.dumps({"model": "gpt-4o-mini", "temperature": 0.1}),
        "llm.finish_reason": "tool_calls",
        **_messages("llm.input_messages", [
            {"role": "system", "content": "You answer order questions."},
            {"role": "user", "content": "Where is order 42?"}]),
        **_messages("llm.output_messages", [
            {"role": "assistant", "tool_calls": [
                {"id": "call_a", "name": "lookup_order", "arguments": {"order": 42}}]}]),
    }, parent=s.sid(agent), start_ms=10, end_ms=210, kind=3)
    tool = s.span(trace_id, "lookup_order", {
        KIND: "TOOL", "tool.name": "lookup_order", "tool_call.id": "call_a",
        "input.value": '{"order": 42}', "input.mime_type": "application/json",
        "output.value": '{"status": "shipped"}'}, parent=s.sid(agent), start_ms=220,
        end_ms=260)
    chain = s.span(trace_id, "compose-answer", {
        KIND: "CHAIN", "input.value": "shipped", "output.value": "Order 42 ships tomorrow."},
        parent=s.sid(agent), start_ms=270, end_ms=800)
    retriever = s.span(trace_id, "retrieve-policy", {
        KIND: "RETRIEVER", "input.value": "shipping policy",
        "retrieval.documents.0.document.id": "doc-1",
        "retrieval.documents.0.document.content": "We ship within a day.",
        "retrieval.documents.0.document.score": 0.9}, parent=s.sid(chain), start_ms=280,
        end_ms=300)
    return trace_id, {"agent": agent, "llm": llm, "tool": tool, "chain": chain,
                      "retriever": retriever}


def test_an_openinference_agent_trace_becomes_a_run_with_its_calls(acme, otlp_post):
    trace_id, sp = support_trace()
    assert otlp_post(acme, s.protobuf(*sp.values())).status_code == 200

    run = Run.objects.select_related("agent").get(tenant=acme, run_id=run_id_for(trace_id))
    assert (run.agent.agent_id, run.agent.name) == ("support-agent", "support-agent")
    assert run.status == "succeeded"
    assert run.goal == "Where is order 42?"
    assert run.trigger_ref == "sess-7"
    assert (run.metadata["session_id"], run.metadata["user_id"]) == ("sess-7", "user-3")
    assert run.metadata["convention"] == "openinference"

    chat = ModelCall.objects.get(run=run)
    assert (chat.provider, chat.model) == ("openai", "gpt-4o-mini-2024-07-18")
    assert (chat.input_tokens, chat.output_tokens, chat.latency_ms) == (50, 12, 200)
    assert [m["role"] for m in chat.messages] == ["system", "user"]
    assert chat.messages[1]["content"] == "Where is order 42?"
    response = chat.response or {}
    asked = response["messages"][0]["tool_calls"][0]
    assert asked == {"id": "call_a", "function": {"name": "lookup_order",
                                                  "arguments": {"order": 42}}}
    assert response["finish_reason"] == "tool_calls"
    assert response["total_tokens"] == 62

    call = ToolCall.objects.select_related("tool").get(run=run)
    assert (call.tool.name, call.tool_call_ref, call.status) == (
        "lookup_order", "call_a", "succeeded")
    assert (call.input, call.output) == ({"order": 42}, {"status": "shipped"})

    step = Step.objects.get(run=run)
    assert step.title == "compose-answer"
    notes = {a.data.get("label"): a for a in Annotation.objects.filter(run=run)}
    retrieved = notes["retriever"]
    assert retrieved.data["input"] == "shipping policy"
    assert retrieved.data["documents"][0]["content"] == "We ship within a day."
    assert notes["run_end"].data["output"] == "Order 42 ships tomorrow."
    assert set(OtlpSpan.objects.filter(trace__trace_id=trace_id).values_list(
        "state", flat=True)) == {"recorded"}
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_an_openinference_trace_sent_child_first_waits_for_its_root(acme, otlp_post):
    trace_id, sp = support_trace()
    agent = sp.pop("agent")
    assert otlp_post(acme, s.protobuf(*sp.values())).status_code == 200
    assert not Run.objects.exists()
    assert otlp_post(acme, s.protobuf(agent)).status_code == 200
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert ModelCall.objects.filter(run=run).count() == 1
    assert ToolCall.objects.filter(run=run).count() == 1


@pytest.mark.parametrize("kind", ["EMBEDDING", "RERANKER", "GUARDRAIL", "EVALUATOR"])
def test_the_other_openinference_kinds_are_labelled_notes_on_the_run(acme, otlp_post, kind):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "workflow", {KIND: "CHAIN", "input.value": "q"}, end_ms=100)
    other = s.span(trace_id, f"a {kind.lower()}", {
        KIND: kind, "input.value": "some input", "output.value": "some output",
        "embedding.model_name": "text-embedding-3-small",
        "embedding.embeddings.0.embedding.text": "hello",
        "embedding.embeddings.0.embedding.vector": [0.1, 0.2, 0.3]},
        parent=s.sid(root), start_ms=10, end_ms=20)
    assert otlp_post(acme, s.protobuf(other, root)).status_code == 200
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.agent.agent_id == "otel:weather-app"  # a chain names no agent: the service
    note = Annotation.objects.get(run=run, data__label=kind.lower())
    assert kind in note.body
    assert (note.data["input"], note.data["output"]) == ("some input", "some output")
    if kind == "EMBEDDING":
        assert note.data["embeddings"] == [{"text": "hello"}]  # vectors are not content


def test_a_registered_tool_keeps_its_class_and_an_unknown_one_is_flagged_as_exfil(
        acme, otlp_post):
    Tool.objects.create(tenant=acme, name="lookup_order", action_class="read")
    trace_id, sp = support_trace()
    unknown = s.span(trace_id, "wire_money", {
        KIND: "TOOL", "tool.name": "wire_money", "input.value": '{"amount": 10}'},
        parent=s.sid(sp["agent"]), start_ms=300, end_ms=310)
    assert otlp_post(acme, s.protobuf(unknown, *sp.values())).status_code == 200

    calls = {c.tool.name: c for c in ToolCall.objects.select_related("tool")}
    assert calls["lookup_order"].action_class == "read"
    assert calls["wire_money"].action_class == "exfil"  # the strictest, never silently read
    flag = Annotation.objects.get(target_call_id=calls["wire_money"].call_id)
    assert flag.data["label"] == "unregistered_tool"
    assert "not in the tool registry" in flag.body
    assert not Annotation.objects.filter(target_call_id=calls["lookup_order"].call_id).exists()


def test_openinference_llm_and_tool_spans_under_a_genai_agent_make_one_run(acme, otlp_post):
    trace_id, sp = support_trace()
    root = s.span(trace_id, "invoke_agent support", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support"},
        start_ms=0, end_ms=1000)
    sp["agent"].parent_span_id = bytes.fromhex(s.sid(root))
    assert otlp_post(acme, s.protobuf(root, *sp.values())).status_code == 200

    run = Run.objects.select_related("agent").get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.agent.agent_id == "support"  # the outermost agent span is the run
    assert ModelCall.objects.get(run=run).model == "gpt-4o-mini-2024-07-18"
    assert ToolCall.objects.get(run=run).tool.name == "lookup_order"
    assert set(Step.objects.filter(run=run).values_list("title", flat=True)) == {
        "support-agent", "compose-answer"}
    assert not OtlpSpan.objects.filter(trace__trace_id=trace_id, state="unmapped").exists()


def test_genai_spans_under_an_openinference_agent_make_one_run(acme, otlp_post):
    trace_id = s.new_trace_id()
    agent = s.span(trace_id, "planner", {KIND: "AGENT", "agent.name": "planner",
                                         "input.value": "plan the trip"}, end_ms=500)
    chat = s.span(trace_id, "chat gpt-4.1", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1", "gen_ai.usage.input_tokens": 5},
        parent=s.sid(agent), start_ms=10, end_ms=100, kind=3)
    tool = s.span(trace_id, "execute_tool book", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "book",
        "gen_ai.tool.call.arguments": '{"city": "Oslo"}'}, parent=s.sid(agent),
        start_ms=110, end_ms=200)
    assert otlp_post(acme, s.protobuf(chat, tool, agent)).status_code == 200

    run = Run.objects.select_related("agent").get(tenant=acme, run_id=run_id_for(trace_id))
    assert (run.agent.agent_id, run.goal) == ("planner", "plan the trip")
    assert ModelCall.objects.get(run=run).input_tokens == 5
    assert ToolCall.objects.get(run=run).input == {"city": "Oslo"}


def test_one_call_seen_by_both_conventions_is_recorded_once(acme, otlp_post):
    """Two instrumentations of the same client (the official OpenAI one and OpenInference's)
    nest one span in the other: one model call, the inner span kept as a note."""
    trace_id = s.new_trace_id()
    agent = s.span(trace_id, "planner", {KIND: "AGENT", "agent.name": "planner"}, end_ms=500)
    outer = s.span(trace_id, "chat gpt-4.1", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1"}, parent=s.sid(agent), start_ms=10, end_ms=100,
        kind=3)
    inner = s.span(trace_id, "ChatCompletion", {KIND: "LLM", "llm.model_name": "gpt-4.1"},
                   parent=s.sid(outer), start_ms=11, end_ms=99)
    assert otlp_post(acme, s.protobuf(outer, inner, agent)).status_code == 200
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert ModelCall.objects.filter(run=run).count() == 1
    assert OtlpSpan.objects.get(trace__trace_id=trace_id, span_id=s.sid(inner)).state == (
        "unmapped")
