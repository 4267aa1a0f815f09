"""The OpenAI Agents SDK with OpenInference's instrumentation, against the fake OpenAI server
on loopback (chat completions), exported to a live portal: the run is filed under the agent,
not under its root ``Agent workflow`` span, with its model calls and tool call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool
from openai import AsyncOpenAI
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from runs.integrity import verify_tenant
from runs.models import ModelCall, Run, ToolCall

from .fake_openai import fake_openai

pytestmark = pytest.mark.django_db(transaction=True)


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return json.dumps({"city": city, "temperature_c": 21})


def ask_the_weather_agent() -> str:
    """One run of a one-tool agent against the fake server; its client closed in its loop."""

    async def run() -> str:
        client = AsyncOpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
        try:
            agent = Agent(name="Weather Agent", instructions="You report the weather.",
                          model=OpenAIChatCompletionsModel(model="gpt-4o-mini",
                                                           openai_client=client),
                          tools=[get_weather])
            result = await Runner.run(agent, "What is the weather in Paris?")
            return str(result.final_output)
        finally:
            await client.close()

    with fake_openai() as server, ThreadPoolExecutor(1) as own_loop:
        # a thread of its own: an earlier test in the same process (the browser's sync API)
        # may leave an event loop running in this one, where asyncio.run refuses to start
        return own_loop.submit(lambda: asyncio.run(run())).result(timeout=120)


def test_the_agents_sdk_with_openinference_records_the_run(live_server: Any, acme: Any,
                                                           api_key: Callable[..., str]) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", timeout=10,
                                headers={"Authorization": f"Bearer {api_key(acme, ['ingest'])}"})
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-agents"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=provider)  # replaces the SDK's own exporter
    try:
        assert ask_the_weather_agent() == "It is 21 C in Paris."
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    run = Run.objects.select_related("agent").get(tenant=acme, run_id__startswith="otel-")
    assert (run.agent.agent_id, run.agent.name) == ("Weather-Agent", "Weather Agent")
    assert run.status == "succeeded"
    calls = list(ModelCall.objects.filter(run=run).order_by("seq"))
    assert [c.model for c in calls] == ["gpt-4o-mini"] * 2  # the SDK reports the model asked
    assert calls[0].input_tokens == 41
    tool = ToolCall.objects.select_related("tool").get(run=run)
    assert tool.tool.name == "get_weather"
    assert tool.input == {"city": "Paris"}
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_the_agents_sdk_with_the_official_instrumentation_records_the_run(
        live_server: Any, acme: Any, api_key: Callable[..., str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its root span is ``Agent workflow`` (invoke_agent, naming no agent), and it stamps its
    own defaults on every span (``gen_ai.agent.id`` "agent", described "OpenAI Agents
    instrumentation"): the run is filed under the application's agent, named below."""
    import agents
    from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor as Official

    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "span_only")
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", timeout=10,
                                headers={"Authorization": f"Bearer {api_key(acme, ['ingest'])}"})
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-agents"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    agents.set_trace_processors([])  # not the SDK's own exporter to OpenAI's servers
    instrumentor = Official()
    instrumentor.instrument(tracer_provider=provider)
    try:
        assert ask_the_weather_agent() == "It is 21 C in Paris."
    finally:
        instrumentor.uninstrument()
        provider.shutdown()

    run = Run.objects.select_related("agent").get(tenant=acme, run_id__startswith="otel-")
    assert (run.agent.agent_id, run.agent.name) == ("Weather-Agent", "Weather Agent")
    assert run.status == "succeeded"
    assert ModelCall.objects.filter(run=run).count() == 2
    tool = ToolCall.objects.select_related("tool").get(run=run)
    assert tool.tool.name == "get_weather"
    assert verify_tenant(acme, run_id=run.run_id).intact
