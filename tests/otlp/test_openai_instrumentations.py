"""The real ``openai`` client, instrumented by OpenInference's and by OpenTelemetry's own
instrumentation, against a fake OpenAI-compatible server on loopback, exporting through the
real OTLP/HTTP exporter to a live portal: the run, its model calls and its tool call land."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openinference.instrumentation import TracerProvider as OITracerProvider
from openinference.instrumentation import using_session
from openinference.instrumentation.openai import OpenAIInstrumentor as OIOpenAIInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor as OTelOpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from runs.integrity import verify_tenant
from runs.models import ModelCall, OtlpEvent, OtlpSpan, Run, ToolCall

from .fake_openai import MODEL, fake_openai

pytestmark = pytest.mark.django_db(transaction=True)

QUESTION = "What is the weather in Paris?"
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def get_weather(city: str) -> str:
    return json.dumps({"city": city, "temperature_c": 21})


def ask_with_tool(client: openai.OpenAI, run_tool: Callable[[str, str], str]) -> str:
    """The agent loop of most applications: ask, run the tool the model asks for, ask again."""
    messages: list[Any] = [{"role": "system", "content": "You report the weather."},
                           {"role": "user", "content": QUESTION}]
    first = client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                           tools=TOOLS, temperature=0.2, max_tokens=200)
    asked = first.choices[0].message
    call = (asked.tool_calls or [])[0]
    messages.append(asked.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id,
                     "content": run_tool(call.id, call.function.arguments)})  # type: ignore[union-attr]
    final = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)
    return final.choices[0].message.content or ""


@pytest.fixture
def exporter_to(api_key: Callable[..., str]) -> Callable[..., OTLPSpanExporter]:
    def make(live_server: Any, tenant: Any) -> OTLPSpanExporter:
        return OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", timeout=10,
                                headers={"Authorization": f"Bearer {api_key(tenant, ['ingest'])}"})
    return make


@pytest.fixture
def fake_server() -> Iterator[Any]:
    with fake_openai() as server:
        yield server


def _run(tenant: Any) -> Run:
    return Run.objects.select_related("agent").get(tenant=tenant, run_id__startswith="otel-")


def test_openinference_openai_instrumentation_records_the_run(live_server, acme, exporter_to,
                                                              fake_server):
    provider = OITracerProvider(resource=Resource.create({"service.name": "weather-oi"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_to(live_server, acme)))
    instrumentor = OIOpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        tracer = provider.get_tracer("weather-oi")
        client = openai.OpenAI(base_url=fake_server.url, api_key="sk-test", max_retries=0)

        @tracer.tool(name="get_weather")
        def weather_tool(city: str) -> str:
            return get_weather(city)

        with using_session("sess-oi-1"), tracer.start_as_current_span(
                "weather-agent", openinference_span_kind="agent") as agent:
            agent.set_input(QUESTION)
            answer = ask_with_tool(client, lambda _id, args: weather_tool(**json.loads(args)))
            agent.set_output(answer)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    run = _run(acme)
    assert run.status == "succeeded"
    assert (run.agent.agent_id, run.goal, run.trigger_ref) == (
        "weather-agent", QUESTION, "sess-oi-1")
    first, final = ModelCall.objects.filter(run=run).order_by("seq")
    assert (first.provider, first.model) == ("openai", MODEL)
    assert (first.input_tokens, first.output_tokens) == (41, 9)
    assert [m["role"] for m in first.messages] == ["system", "user"]
    asked = (first.response or {})["messages"][0]["tool_calls"][0]
    assert asked["function"] == {"name": "get_weather", "arguments": {"city": "Paris"}}
    assert (first.request or {})["parameters"]["temperature"] == 0.2
    assert (final.response or {})["messages"][0]["content"] == "It is 21 C in Paris."
    tool = ToolCall.objects.select_related("tool").get(run=run)
    assert (tool.tool.name, tool.input, tool.status) == (
        "get_weather", {"city": "Paris"}, "succeeded")
    assert tool.output == {"city": "Paris", "temperature_c": 21}
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_the_official_openai_instrumentation_records_the_run(live_server, acme, exporter_to,
                                                             fake_server, monkeypatch):
    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    _reset_semconv_stability()
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-otel"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_to(live_server, acme)))
    instrumentor = OTelOpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    try:
        tracer = provider.get_tracer("weather-otel")
        client = openai.OpenAI(base_url=fake_server.url, api_key="sk-test", max_retries=0)

        def run_tool(call_id: str, arguments: str) -> str:
            with tracer.start_as_current_span("execute_tool get_weather", attributes={
                    "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
                    "gen_ai.tool.call.id": call_id,
                    "gen_ai.tool.call.arguments": arguments}) as span:
                result = get_weather(**json.loads(arguments))
                span.set_attribute("gen_ai.tool.call.result", result)
                return result

        with tracer.start_as_current_span("invoke_agent weather-agent", attributes={
                "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-agent",
                "gen_ai.conversation.id": "conv-otel-1"}):
            ask_with_tool(client, run_tool)
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        _reset_semconv_stability()

    run = _run(acme)
    assert (run.agent.agent_id, run.trigger_ref, run.status) == (
        "weather-agent", "conv-otel-1", "succeeded")
    first, final = ModelCall.objects.filter(run=run).order_by("seq")
    assert (first.provider, first.model) == ("openai", MODEL)
    assert (first.input_tokens, first.output_tokens) == (41, 9)
    assert (first.request or {})["model"] == "gpt-4o-mini"
    assert (first.request or {})["parameters"]["temperature"] == 0.2
    assert first.messages, "captured content (span_only) lands as the prompt"
    assert final.response
    tool = ToolCall.objects.select_related("tool").get(run=run)
    assert (tool.tool.name, tool.tool_call_ref, tool.input) == (
        "get_weather", "call_w1", {"city": "Paris"})
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_the_official_instrumentation_in_event_mode_lands_its_content_through_v1_logs(
        live_server, acme, exporter_to, fake_server, monkeypatch, api_key):
    """Content capture as events: the messages travel as log records, not span attributes,
    and join their spans in the portal."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

    monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", "gen_ai_latest_experimental")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "event_only")
    _reset_semconv_stability()
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-events"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_to(live_server, acme)))
    logger_provider = LoggerProvider(resource=Resource.create(
        {"service.name": "weather-events"}))
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(
        endpoint=f"{live_server.url}/v1/logs", timeout=10,
        headers={"Authorization": f"Bearer {api_key(acme, ['ingest'])}"})))
    instrumentor = OTelOpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider, logger_provider=logger_provider)
    try:
        client = openai.OpenAI(base_url=fake_server.url, api_key="sk-test", max_retries=0)
        with provider.get_tracer("weather-events").start_as_current_span(
                "invoke_agent weather-agent", attributes={
                    "gen_ai.operation.name": "invoke_agent",
                    "gen_ai.agent.name": "weather-agent"}):
            ask_with_tool(client, lambda _id, args: get_weather(**json.loads(args)))
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        logger_provider.shutdown()
        _reset_semconv_stability()

    run = _run(acme)
    first, final = ModelCall.objects.filter(run=run).order_by("seq")
    assert [m["role"] for m in first.messages] == ["system", "user"]
    assert QUESTION in json.dumps(first.messages)
    assert "It is 21 C in Paris." in json.dumps(final.response)
    assert not OtlpEvent.objects.exists()  # every event joined its span


def test_both_instrumentations_on_one_client_record_each_call_once(live_server, acme,
                                                                   exporter_to, fake_server):
    provider = OITracerProvider(resource=Resource.create({"service.name": "weather-both"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter_to(live_server, acme)))
    instrumentors: list[Any] = [OTelOpenAIInstrumentor(), OIOpenAIInstrumentor()]
    for instrumentor in instrumentors:
        instrumentor.instrument(tracer_provider=provider)
    try:
        tracer = provider.get_tracer("weather-both")
        client = openai.OpenAI(base_url=fake_server.url, api_key="sk-test", max_retries=0)
        with tracer.start_as_current_span("weather-agent", openinference_span_kind="agent"):
            ask_with_tool(client, lambda _id, args: get_weather(**json.loads(args)))
    finally:
        for instrumentor in instrumentors:
            instrumentor.uninstrument()
        provider.shutdown()

    run = _run(acme)
    assert ModelCall.objects.filter(run=run).count() == 2  # two completions, not four
    assert OtlpSpan.objects.filter(trace__run_id=run.run_id, state="unmapped").count() == 2


def _reset_semconv_stability() -> None:
    """The SDK reads OTEL_SEMCONV_STABILITY_OPT_IN once per process; the test sets its own."""
    from opentelemetry.instrumentation import _semconv

    stability = _semconv._OpenTelemetrySemanticConventionStability
    stability._initialized = False
