"""An agent that uses the client and OpenTelemetry together gets one run, not two: the client
follows the W3C trace context (the current OTel span, a ``traceparent`` given, or the
``TRACEPARENT`` variable) and records into the run the trace's spans land in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from core.models import Tenant
from ledger_client import LedgerClient
from runs.integrity import verify_tenant
from runs.models import ModelCall, OtlpSpan, Run, ToolCall

pytestmark = pytest.mark.django_db(transaction=True)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def provider(live_server: Any, acme: Tenant, api_key: Callable[..., str]
             ) -> Iterator[TracerProvider]:
    exporter = OTLPSpanExporter(endpoint=f"{live_server.url}/v1/traces", timeout=10,
                                headers={"Authorization": f"Bearer {api_key(acme, ['ingest'])}"})
    provider = TracerProvider(resource=Resource.create({"service.name": "weather-demo"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


def _chat(provider: TracerProvider) -> None:
    with provider.get_tracer("demo").start_as_current_span("chat gpt-4.1", attributes={
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1", "gen_ai.usage.input_tokens": 7}):
        pass


def test_the_client_and_otel_spans_of_one_agent_make_one_run(
        make_client: Callable[..., LedgerClient], provider: TracerProvider, acme: Tenant,
        publish: Any, register_tools: Any) -> None:
    publish([{"name": "reads", "action_classes": ["read"], "effect": "allow"}])
    register_tools(acme, get_weather="read")
    client = make_client()

    @client.gated_tool("get_weather", action_class="read")
    def get_weather(city: str) -> dict[str, Any]:
        return {"city": city, "temperature_c": 21}

    tracer = provider.get_tracer("demo")
    agent_span = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-agent"}
    with tracer.start_as_current_span("invoke_agent weather-agent", attributes=agent_span
                                      ) as root, client.run(agent_id="weather-agent",
                                                            goal="Paris weather") as run:
        _chat(provider)
        get_weather("Paris", tool_call_ref="call_9")  # type: ignore[call-arg]  # the wrapper takes it
    assert client.flush(timeout=30)
    trace_id = f"{root.get_span_context().trace_id:032x}"

    assert run.run_id == f"otel-{trace_id}"
    [recorded] = Run.objects.filter(tenant=acme, agent__agent_id="weather-agent")
    assert recorded.run_id == run.run_id
    assert recorded.status == "succeeded"
    assert recorded.metadata["trace_id"] == trace_id
    assert ModelCall.objects.get(run=recorded).input_tokens == 7
    call = ToolCall.objects.get(run=recorded)
    assert (call.tool.name, call.tool_call_ref) == ("get_weather", "call_9")
    # the agent span ends after the client's run: a step of it, or (if the client's end came
    # first) kept raw as a late span with a note on the run; never left pending
    assert not OtlpSpan.objects.filter(trace__trace_id=trace_id, state="pending").exists()
    assert verify_tenant(acme, run_id=recorded.run_id).intact


def test_a_traceparent_given_or_in_the_environment_names_the_run(
        make_client: Callable[..., LedgerClient], monkeypatch: pytest.MonkeyPatch) -> None:
    client = make_client()
    with client.run(agent_id="a", traceparent=f"00-{TRACE}-00f067aa0ba902b7-01") as run:
        pass
    assert run.run_id == f"otel-{TRACE}"
    monkeypatch.setenv("TRACEPARENT", f"00-{'1' * 32}-00f067aa0ba902b7-01")
    with client.run(agent_id="a") as run:
        pass
    assert run.run_id == f"otel-{'1' * 32}"
    with client.run(agent_id="a", traceparent="not a traceparent") as run:
        pass
    assert run.run_id.startswith("run")  # an invalid one is ignored (W3C: restart the trace)


def test_call_tool_takes_a_tool_call_ref(make_client: Callable[..., LedgerClient],
                                         publish: Any, register_tools: Any,
                                         acme: Tenant) -> None:
    publish([{"name": "reads", "action_classes": ["read"], "effect": "allow"}])
    register_tools(acme, get_weather="read")
    client = make_client()
    with client.run(agent_id="a") as run:
        run.call_tool("get_weather", lambda city: city, action_class="read",
                      arguments={"city": "Oslo"}, tool_call_ref="call_3")
    assert client.flush(timeout=30)
    assert ToolCall.objects.get(run__run_id=run.run_id).tool_call_ref == "call_3"
