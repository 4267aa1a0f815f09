"""GenAI events sent as OTLP logs (``POST /v1/logs``: content capture in event mode) join the
span they belong to, before or after it arrives, and nothing of them is lost."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs

from runs.models import Annotation, ModelCall, OtlpEvent

from . import spans as s

pytestmark = pytest.mark.django_db

PROTOBUF = "application/x-protobuf"


def log(trace_id: str, span_id: str, name: str, body: Any = None,
        attrs: dict[str, Any] | None = None) -> LogRecord:
    record = LogRecord(trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id),
                       event_name=name, time_unix_nano=s.T0)
    record.attributes.extend(s.attributes(attrs or {}))
    if body is not None:
        record.body.CopyFrom(_any(body))
    return record


def _any(value: Any) -> AnyValue:
    if not isinstance(value, dict):
        return s.any_value(value)
    out = AnyValue()
    for key, item in value.items():
        out.kvlist_value.values.add(key=key).value.CopyFrom(_any(item))
    return out


def logs_body(*records: LogRecord) -> bytes:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[
        ScopeLogs(log_records=list(records))])]).SerializeToString()


@pytest.fixture
def logs_post(api_key: Callable[..., str]) -> Callable[..., Any]:
    def post(tenant: Any, body: bytes, content_type: str = PROTOBUF) -> Any:
        return Client().post("/v1/logs", data=body, content_type=content_type,
                             headers={"Authorization": f"Bearer {api_key(tenant, ['ingest'])}"})
    return post


def _chat(trace_id: str) -> Any:
    return s.span(trace_id, "chat gpt-4.1", {"gen_ai.operation.name": "chat",
                                             "gen_ai.provider.name": "openai",
                                             "gen_ai.request.model": "gpt-4.1"})


def test_events_sent_before_their_span_become_its_messages(acme, otlp_post, logs_post):
    trace_id = s.new_trace_id()
    chat = _chat(trace_id)
    answer = logs_post(acme, logs_body(
        log(trace_id, s.sid(chat), "gen_ai.user.message", {"content": "Weather in Paris?"},
            {"gen_ai.system": "openai"}),
        log(trace_id, s.sid(chat), "gen_ai.choice",
            {"index": 0, "finish_reason": "stop", "message": {"content": "Sunny."}})))
    assert answer.status_code == 200
    assert not ExportLogsServiceResponse.FromString(answer.content).HasField("partial_success")
    assert OtlpEvent.objects.filter(tenant=acme).count() == 2  # waiting for the span

    assert otlp_post(acme, s.protobuf(chat)).status_code == 200
    call = ModelCall.objects.get(tenant=acme)
    assert call.messages == [{"role": "user", "content": "Weather in Paris?"}]
    assert (call.response or {})["messages"][0]["message"] == {"content": "Sunny."}
    assert not OtlpEvent.objects.exists()  # joined: the span keeps them


def test_the_details_event_of_the_latest_conventions_is_read(acme, otlp_post, logs_post):
    trace_id = s.new_trace_id()
    chat = _chat(trace_id)
    logs_post(acme, logs_body(log(
        trace_id, s.sid(chat), "gen_ai.client.inference.operation.details", attrs={
            "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                {"type": "text", "content": "hi"}]}]),
            "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                {"type": "text", "content": "hello"}]}])})))
    otlp_post(acme, s.protobuf(chat))
    call = ModelCall.objects.get(tenant=acme)
    assert call.messages[0]["parts"][0]["content"] == "hi"
    assert (call.response or {})["messages"][0]["parts"][0]["content"] == "hello"


def test_events_after_their_span_was_recorded_are_a_note_on_its_call(acme, otlp_post,
                                                                     logs_post):
    trace_id = s.new_trace_id()
    chat = _chat(trace_id)
    otlp_post(acme, s.protobuf(chat))
    call = ModelCall.objects.get(tenant=acme)

    logs_post(acme, logs_body(log(trace_id, s.sid(chat), "gen_ai.user.message",
                                  {"content": "late question"})))
    note = Annotation.objects.get(target_call_id=call.call_id)
    assert note.data["events"][0]["attributes"]["content"] == "late question"
    assert not OtlpEvent.objects.exists()


def test_records_that_are_not_genai_events_are_rejected_and_counted(acme, logs_post):
    trace_id = s.new_trace_id()
    plain = LogRecord(body=s.any_value("GET /health 200"), time_unix_nano=s.T0)
    no_context = LogRecord(event_name="gen_ai.user.message", time_unix_nano=s.T0)
    answer = ExportLogsServiceResponse.FromString(logs_post(acme, logs_body(
        plain, no_context, log(trace_id, s.new_span_id(), "gen_ai.user.message", "hi")
    )).content)
    assert answer.partial_success.rejected_log_records == 2
    assert "not a GenAI event" in answer.partial_success.error_message
    assert "no trace or span id" in answer.partial_success.error_message
    assert OtlpEvent.objects.count() == 1


def test_a_globex_key_never_joins_acmes_spans(acme, globex, otlp_post, logs_post):
    trace_id = s.new_trace_id()
    chat = _chat(trace_id)
    logs_post(globex, logs_body(log(trace_id, s.sid(chat), "gen_ai.user.message",
                                    {"content": "globex"})))
    otlp_post(acme, s.protobuf(chat))
    assert ModelCall.objects.get(tenant=acme).messages == []
    assert OtlpEvent.objects.get().tenant == globex


def test_a_malformed_logs_body_is_a_400(acme, logs_post):
    assert logs_post(acme, b"\x0a\xff\xff\xff\x0f garbage").status_code == 400
    assert logs_post(acme, b"{not json", content_type="application/json").status_code == 400


def test_an_event_whose_span_never_arrives_is_deferred_not_left_unseen(acme, logs_post,
                                                                       settings):
    """Nothing the portal receives is lost, and nothing it cannot place is invisible: past
    twice the quiet period, an event still waiting for its span becomes a deferred item."""
    from datetime import timedelta

    from django.utils import timezone

    from runs.models import DeferredItem
    from runs.tasks import defer_orphan_otel_events

    settings.LEDGER_OTLP_QUIET_SECONDS = 60
    trace_id, never = s.new_trace_id(), "00f067aa0ba902b7"
    waits = _chat(trace_id)
    assert logs_post(acme, logs_body(
        log(trace_id, never, "gen_ai.user.message", {"content": "Weather in Oslo?"}),
        log(trace_id, s.sid(waits), "gen_ai.choice", {"index": 0}))).status_code == 200
    OtlpEvent.objects.filter(span_id=s.sid(waits)).update(received_at=timezone.now())
    OtlpEvent.objects.filter(span_id=never).update(
        received_at=timezone.now() - timedelta(seconds=121))

    assert defer_orphan_otel_events.apply().get() == 1
    item = DeferredItem.objects.get(tenant=acme)
    assert (item.source, item.reason_code, item.status) == (
        "otlp_trace_gap", "event_without_span", "pending")
    assert item.payload["span_id"] == never
    assert item.payload["event"]["name"] == "gen_ai.user.message"
    assert list(OtlpEvent.objects.values_list("span_id", flat=True)) == [s.sid(waits)]
    assert defer_orphan_otel_events.apply().get() == 0
    assert DeferredItem.objects.filter(tenant=acme).count() == 1  # once
