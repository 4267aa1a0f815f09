"""GenAI runs keep what the spans say: the agent span's messages as the run's goal and output,
a failing run's error with its exception, the agent named below an unnamed workflow span, the
request side of model calls, MCP tool calls classed by the registry."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from runs.governance_log import setting_up
from runs.integrity import verify_tenant
from runs.models import Annotation, ModelCall, Run, Tool, ToolCall
from runs.otlp.assembly import run_id_for

from . import spans as s

pytestmark = pytest.mark.django_db

CARD = "4111 1111 1111 1111"
STACK = 'Traceback (most recent call last):\n  File "agent.py", line 9, in run\nValueError'


def test_the_agent_spans_messages_are_the_runs_goal_and_output(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent helper", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helper",
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be kind"}]),
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
            {"type": "text", "content": "Book a table for two"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
            {"type": "text", "content": "Booked for 8 pm"}], "finish_reason": "stop"}]),
    }, end_ms=900)
    assert otlp_post(acme, s.protobuf(root)).status_code == 200

    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.goal == "Book a table for two"  # the instructions are not the goal
    end = Annotation.objects.get(run=run, data__label="run_end")
    assert end.data["output"][0]["parts"][0]["content"] == "Booked for 8 pm"
    assert end.body == "Run output"


def test_a_failing_run_keeps_its_error_and_exception_redacted_when_read(
        acme, alice, otlp_post, user_client):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent payments", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "payments",
        "error.type": "ValueError"}, end_ms=900, error="the payment agent gave up",
        events=[("exception", {"exception.type": "ValueError",
                               "exception.message": f"card {CARD} rejected",
                               "exception.stacktrace": STACK})])
    assert otlp_post(acme, s.protobuf(root)).status_code == 200

    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.status == "failed"
    end = Annotation.objects.get(run=run, data__label="run_end")
    assert end.data["error"] == {"type": "ValueError", "message": "the payment agent gave up",
                                 "exception_type": "ValueError",
                                 "exception_message": f"card {CARD} rejected",
                                 "stacktrace": STACK}
    assert end.body == "Run failed: ValueError: the payment agent gave up"
    shown = user_client(alice).get(reverse("api:run-detail", args=[run.run_id]))
    assert shown.status_code == 200
    assert "the payment agent gave up" in shown.content.decode()
    assert CARD not in shown.content.decode()
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_an_unnamed_workflow_span_takes_the_first_named_agent_below_it(acme, otlp_post):
    """The OpenAI Agents SDK's root span says ``Agent workflow`` and names no agent."""
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "Agent workflow", {"gen_ai.operation.name": "invoke_agent"},
                  end_ms=900)
    triage = s.span(trace_id, "invoke_agent Triage Agent", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Triage Agent"},
        parent=s.sid(root), start_ms=10, end_ms=800)
    assert otlp_post(acme, s.protobuf(triage, root)).status_code == 200
    run = Run.objects.select_related("agent").get(tenant=acme, run_id=run_id_for(trace_id))
    assert (run.agent.agent_id, run.agent.name) == ("Triage-Agent", "Triage Agent")


def test_an_unnamed_workflow_without_named_agents_is_filed_under_its_service(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "Agent workflow", {"gen_ai.operation.name": "invoke_agent"},
                  end_ms=900)
    assert otlp_post(acme, s.protobuf(root, service="booking-app")).status_code == 200
    run = Run.objects.select_related("agent").get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.agent.agent_id == "otel:booking-app"


def test_the_request_side_of_a_model_call_is_kept(acme, otlp_post):
    trace_id = s.new_trace_id()
    chat = s.span(trace_id, "chat gpt-4.1", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1", "gen_ai.response.model": "gpt-4.1-2025-04-14",
        "gen_ai.request.temperature": 0.2, "gen_ai.request.max_tokens": 256,
        "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "be terse"}]),
        "gen_ai.input.messages": json.dumps([
            {"role": "system", "parts": [{"type": "text", "content": "be terse"}]},
            {"role": "user", "parts": [{"type": "text", "content": "hi"}]}])})
    assert otlp_post(acme, s.protobuf(chat)).status_code == 200
    call = ModelCall.objects.get(tenant=acme)
    assert call.model == "gpt-4.1-2025-04-14"
    assert call.request == {"model": "gpt-4.1",
                            "parameters": {"temperature": 0.2, "max_tokens": 256}}
    assert [m["role"] for m in call.messages] == ["system", "user"]  # not the system twice
    assert "request" in call.ledger_content()  # the hash commits to it
    assert verify_tenant(acme).intact


def test_a_model_call_without_request_data_hashes_as_before(acme, otlp_post):
    trace_id = s.new_trace_id()
    chat = s.span(trace_id, "chat m", {"gen_ai.operation.name": "chat",
                                       "gen_ai.response.model": "m"})
    assert otlp_post(acme, s.protobuf(chat)).status_code == 200
    call = ModelCall.objects.get(tenant=acme)
    assert call.request is None
    assert "request" not in call.ledger_content()


def test_an_mcp_tool_call_takes_its_name_from_the_span_and_its_class_from_the_registry(
        acme, otlp_post):
    with setting_up():
        Tool.objects.create(tenant=acme, name="delete_file", action_class="delete")
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent files", {"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.agent.name": "files"}, end_ms=500)
    known = s.span(trace_id, "tools/call delete_file", {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "delete_file",
        "gen_ai.tool.call.arguments": '{"path": "/tmp/x"}', "gen_ai.tool.call.id": "c1"},
        parent=s.sid(root), start_ms=10, end_ms=20, kind=3)
    unknown = s.span(trace_id, "tools/call get_time", {"mcp.method.name": "tools/call"},
                     parent=s.sid(root), start_ms=30, end_ms=40, kind=3)
    assert otlp_post(acme, s.protobuf(known, unknown, root)).status_code == 200

    calls = {c.tool.name: c for c in ToolCall.objects.select_related("tool")}
    assert (calls["delete_file"].action_class, calls["delete_file"].input) == (
        "delete", {"path": "/tmp/x"})
    assert calls["delete_file"].tool_call_ref == "c1"
    assert calls["get_time"].action_class == "exfil"  # named by the span, not registered
    assert Annotation.objects.get(target_call_id=calls["get_time"].call_id).data["label"] == (
        "unregistered_tool")
