"""The real OpenTelemetry SDK and its OTLP/HTTP exporter, against a live portal on loopback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from runs.integrity import verify_tenant
from runs.models import ModelCall, OtlpTrace, Run, ToolCall


def weather_agent(provider: TracerProvider) -> str:
    """A small instrumented agent: one chat, two tool calls, the second failing."""
    tracer = provider.get_tracer("weather-agent-demo")
    with tracer.start_as_current_span("invoke_agent weather-agent", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-agent",
            "gen_ai.agent.id": "weather-agent", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1", "gen_ai.conversation.id": "conv-sdk"}) as agent:
        with tracer.start_as_current_span("chat gpt-4.1", kind=SpanKind.CLIENT, attributes={
                "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4.1"}) as chat:
            chat.set_attribute("gen_ai.input.messages", json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "Paris weather?"}]}]))
            chat.set_attribute("gen_ai.usage.input_tokens", 42)
            chat.set_attribute("gen_ai.usage.output_tokens", 9)
            chat.set_attribute("gen_ai.response.finish_reasons", ["tool_calls"])
        with tracer.start_as_current_span("execute_tool get_weather", attributes={
                "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                "gen_ai.tool.call.id": "call_1",
                "gen_ai.tool.call.arguments": '{"city": "Paris"}'}) as tool:
            tool.set_attribute("gen_ai.tool.call.result", '{"temperature_c": 21}')
        try:
            with tracer.start_as_current_span("execute_tool send_email", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send_email",
                    "gen_ai.tool.call.id": "call_2"}) as tool:
                tool.set_attribute("error.type", "PermissionError")
                raise PermissionError("token lacks scope mail:send")
        except PermissionError:
            pass  # the agent carries on; the SDK recorded the exception on the span
        return f"{agent.get_span_context().trace_id:032x}"


@pytest.mark.django_db(transaction=True)
def test_the_sdk_exporter_records_an_agent_run_on_a_live_portal(live_server: Any, acme,
                                                                 api_key):
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces",
                                headers={"Authorization": f"Bearer {api_key(acme, ['ingest'])}"},
                                compression=Compression.Gzip, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-demo"}))
    # One request per span as it ends: the children reach the portal before their root.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        trace_id = weather_agent(provider)
    finally:
        provider.shutdown()

    run = Run.objects.get(tenant=acme, run_id=f"otel-{trace_id}")
    assert run.status == "succeeded"
    assert run.agent.agent_id == "weather-agent"
    chat = ModelCall.objects.get(run=run)
    assert (chat.model, chat.input_tokens, chat.output_tokens) == ("gpt-4.1", 42, 9)
    calls = {c.tool.name: c for c in ToolCall.objects.filter(run=run).select_related("tool")}
    assert calls["get_weather"].status == "succeeded"
    assert calls["get_weather"].output == {"temperature_c": 21}
    assert calls["send_email"].status == "failed"
    assert calls["send_email"].error["type"] == "PermissionError"
    assert calls["send_email"].error["message"].endswith("token lacks scope mail:send")
    assert OtlpTrace.objects.get(tenant=acme, trace_id=trace_id).state == "closed"
    assert verify_tenant(acme, run_id=run.run_id).intact
