"""Building OTLP export requests for the tests: spans as the wire carries them."""

from __future__ import annotations

import base64
import gzip
import itertools
import json
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

T0 = 1_790_000_000_000_000_000  # 2026-09-21, in unix nanoseconds
MS = 1_000_000
_ids = itertools.count(1)


def new_trace_id() -> str:
    return f"{0x5EED_0000_0000_0000_0000_0000_0000 + next(_ids):032x}"


def new_span_id() -> str:
    return f"{0xABC0_0000_0000_0000 + next(_ids):016x}"


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        out = AnyValue()
        out.array_value.values.extend(any_value(v) for v in value)
        return out
    return AnyValue(string_value=str(value))


def attributes(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def span(trace_id: str, name: str, attrs: dict[str, Any] | None = None, *,
         span_id: str | None = None, parent: str = "", start_ms: int = 0, end_ms: int = 10,
         error: str | None = None, kind: Any = Span.SPAN_KIND_INTERNAL,
         events: list[tuple[str, dict[str, Any]]] | None = None) -> Span:
    out = Span(trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id or new_span_id()),
               parent_span_id=bytes.fromhex(parent) if parent else b"", name=name, kind=kind,
               start_time_unix_nano=T0 + start_ms * MS, end_time_unix_nano=T0 + end_ms * MS)
    out.attributes.extend(attributes(attrs or {}))
    for event_name, event_attrs in events or []:
        event = out.events.add(name=event_name, time_unix_nano=T0 + start_ms * MS)
        event.attributes.extend(attributes(event_attrs))
    if error:
        out.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
    return out


def sid(s: Span) -> str:
    return s.span_id.hex()


def request(*spans: Span, service: str = "weather-app") -> ExportTraceServiceRequest:
    resource_spans = ResourceSpans()
    resource_spans.resource.attributes.extend(attributes({"service.name": service}))
    scope = ScopeSpans()
    scope.scope.name = "tests.otlp"
    scope.spans.extend(spans)
    resource_spans.scope_spans.append(scope)
    return ExportTraceServiceRequest(resource_spans=[resource_spans])


def protobuf(*spans: Span, **kwargs: Any) -> bytes:
    return request(*spans, **kwargs).SerializeToString()


def otlp_json(*spans: Span, **kwargs: Any) -> bytes:
    """The OTLP JSON encoding: lowerCamelCase, ids in hex (not protobuf's base64)."""
    data = json_format.MessageToDict(request(*spans, **kwargs))
    for rs in data["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in s:
                        s[key] = base64.b64decode(s[key]).hex()
    return json.dumps(data).encode()


def gzipped(body: bytes) -> bytes:
    return gzip.compress(body)


def agent_trace(trace_id: str | None = None, failing_tool: bool = True) -> tuple[str, list[Span]]:
    """An agent run: invoke_agent (root) > chat + execute_tool x2 (the second fails)."""
    trace_id = trace_id or new_trace_id()
    root = span(trace_id, "invoke_agent weather-agent", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-agent",
        "gen_ai.agent.id": "agent-weather-1", "gen_ai.agent.version": "2.1",
        "gen_ai.conversation.id": "conv-42", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1"}, start_ms=0, end_ms=900)
    chat = span(trace_id, "chat gpt-4.1", {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1", "gen_ai.response.model": "gpt-4.1-2025-04-14",
        "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30,
        "gen_ai.response.finish_reasons": ["tool_calls"],
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
            {"type": "text", "content": "Weather in Paris?"}]}]),
        "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
            {"type": "tool_call", "id": "call_1", "name": "get_weather",
             "arguments": {"city": "Paris"}}]}]),
    }, parent=sid(root), start_ms=10, end_ms=310)
    weather = span(trace_id, "execute_tool get_weather", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather",
        "gen_ai.tool.call.id": "call_1", "gen_ai.tool.call.arguments": '{"city": "Paris"}',
        "gen_ai.tool.call.result": '{"temperature_c": 21}'}, parent=sid(root),
        start_ms=320, end_ms=400)
    tools = [weather]
    if failing_tool:
        tools.append(span(trace_id, "execute_tool send_email", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "send_email",
            "gen_ai.tool.call.id": "call_2", "gen_ai.tool.call.arguments": '{"to": "x@y.z"}',
            "error.type": "PermissionError"}, parent=sid(root), start_ms=410, end_ms=500,
            error="token lacks scope mail:send"))
    return trace_id, [chat, *tools, root]
