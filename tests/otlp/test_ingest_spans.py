"""POST /v1/traces: GenAI spans become the ledger records of the key's tenant."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from core.models import Tenant
from runs.governance_log import setting_up
from runs.integrity import verify_tenant
from runs.models import (
    Annotation,
    AnnotationKind,
    ModelCall,
    OtlpSpan,
    OtlpSpanState,
    OtlpTrace,
    Run,
    Tool,
    ToolCall,
)
from runs.otlp.assembly import run_id_for

from . import spans as s
from .conftest import JSON, PROTOBUF, export_response

pytestmark = pytest.mark.django_db


def _register_the_tools(tenant: Tenant) -> None:
    """The tenant's registry knows the trace's tools (an unknown tool is flagged)."""
    with setting_up():
        Tool.objects.create(tenant=tenant, name="get_weather", action_class="read")
        Tool.objects.create(tenant=tenant, name="send_email", action_class="write")


def _timeline(run: Run) -> list[str]:
    kinds = [(m.seq, "model_call") for m in ModelCall.objects.filter(run=run)]
    kinds += [(t.seq, f"tool_call:{t.tool.name}") for t in ToolCall.objects.filter(run=run)]
    kinds += [(a.seq, f"annotation:{a.annotation_kind}") for a in Annotation.objects.filter(
        run=run)]
    return [kind for _, kind in sorted(kinds)]


def test_an_agent_trace_in_protobuf_becomes_a_closed_run_with_its_calls(acme, otlp_post):
    _register_the_tools(acme)
    trace_id, spans = s.agent_trace()
    response = otlp_post(acme, s.protobuf(*spans))

    assert response.status_code == 200
    assert not export_response(response).HasField("partial_success")
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert (run.agent.agent_id, run.agent.name) == ("agent-weather-1", "weather-agent")
    assert run.status == "succeeded"  # the agent span itself ended well
    assert run.trigger_ref == "conv-42"
    assert run.metadata["agent_version"] == "2.1"
    assert run.metadata["provider"] == "openai"
    assert _timeline(run) == ["model_call", "tool_call:get_weather", "tool_call:send_email",
                              "annotation:run_status"]
    chat = ModelCall.objects.get(run=run)
    assert (chat.provider, chat.model) == ("openai", "gpt-4.1-2025-04-14")
    assert (chat.input_tokens, chat.output_tokens, chat.latency_ms) == (120, 30, 300)
    assert chat.messages[0]["parts"][0]["content"] == "Weather in Paris?"
    response = chat.response or {}
    assert response["finish_reasons"] == ["tool_calls"]
    assert response["messages"][0]["parts"][0]["name"] == "get_weather"
    weather, email = ToolCall.objects.filter(run=run).order_by("seq")
    assert (weather.status, weather.input, weather.output) == (
        "succeeded", {"city": "Paris"}, {"temperature_c": 21})
    assert weather.duration_ms == 80
    assert weather.action_class == "read"
    assert email.status == "failed"
    assert email.error == {"type": "PermissionError", "message": "token lacks scope mail:send"}
    assert verify_tenant(acme, run_id=run.run_id).intact
    assert set(OtlpSpan.objects.filter(trace__trace_id=trace_id).values_list(
        "state", flat=True)) == {OtlpSpanState.RECORDED}


def test_gen_ai_tool_call_id_is_kept_as_the_tool_call_ref_beside_the_ledger_call_id(
        acme, otlp_post):
    # Two traces whose models both named their first tool call "call_1": the ledger's call_id
    # (from trace and span ids) stays unique per tenant, the tool's own id is kept as sent
    first_trace, first = s.agent_trace()
    second_trace, second = s.agent_trace()
    assert otlp_post(acme, s.protobuf(*first)).status_code == 200
    assert otlp_post(acme, s.otlp_json(*second), content_type=JSON).status_code == 200
    refs = {}
    for trace_id, spans in ((first_trace, first), (second_trace, second)):
        run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
        weather, email = ToolCall.objects.filter(run=run).order_by("seq")
        assert weather.call_id == f"otel-{trace_id}-{s.sid(spans[1])}"
        assert (weather.tool_call_ref, email.tool_call_ref) == ("call_1", "call_2")
        assert weather.ledger_content()["tool_call_ref"] == "call_1"  # the hash commits to it
        refs[weather.call_id] = weather.tool_call_ref
    assert list(refs.values()) == ["call_1", "call_1"]
    assert verify_tenant(acme).intact


def test_an_execute_tool_span_without_gen_ai_tool_call_id_has_no_tool_call_ref(acme, otlp_post):
    trace_id, spans = s.agent_trace(failing_tool=False)
    for attribute in spans[1].attributes:
        if attribute.key == "gen_ai.tool.call.id":
            spans[1].attributes.remove(attribute)
            break
    assert otlp_post(acme, s.protobuf(*spans)).status_code == 200
    call = ToolCall.objects.get(run__run_id=run_id_for(trace_id))
    assert call.tool_call_ref == ""
    assert "tool_call_ref" not in call.ledger_content()
    assert verify_tenant(acme).intact


def test_the_json_encoding_records_the_same_run_as_protobuf(acme, globex, otlp_post):
    trace_id, spans = s.agent_trace()
    assert otlp_post(acme, s.protobuf(*spans)).status_code == 200
    response = otlp_post(globex, s.otlp_json(*spans), content_type=JSON)

    assert response.status_code == 200
    assert response["Content-Type"] == JSON
    assert json.loads(response.content) == {}
    in_acme = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    in_globex = Run.objects.get(tenant=globex, run_id=run_id_for(trace_id))
    def contents(run: Run) -> list[str]:  # the run-status note names who recorded it: left out
        return [run.content_hash, *ModelCall.objects.filter(run=run).values_list(
            "content_hash", flat=True), *ToolCall.objects.filter(run=run).order_by(
            "seq").values_list("content_hash", flat=True)]

    assert contents(in_globex) == contents(in_acme)  # the same content, hash for hash


def test_a_gzip_body_is_accepted(acme, otlp_post):
    trace_id, spans = s.agent_trace()
    response = otlp_post(acme, s.gzipped(s.protobuf(*spans)), **{"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert Run.objects.filter(tenant=acme, run_id=run_id_for(trace_id)).exists()


def test_children_wait_for_their_root_across_requests(acme, otlp_post):
    _register_the_tools(acme)
    trace_id, spans = s.agent_trace()
    *children, root = spans
    assert otlp_post(acme, s.protobuf(children[1], children[0])).status_code == 200
    assert otlp_post(acme, s.protobuf(children[2])).status_code == 200

    assert not Run.objects.filter(tenant=acme).exists()
    assert OtlpSpan.objects.filter(trace__trace_id=trace_id, state="pending").count() == 3

    assert otlp_post(acme, s.protobuf(root)).status_code == 200
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.status == "succeeded"
    assert _timeline(run) == ["model_call", "tool_call:get_weather", "tool_call:send_email",
                              "annotation:run_status"]
    assert not OtlpSpan.objects.filter(trace__trace_id=trace_id, state="pending").exists()
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_children_that_waited_take_the_outcome_a_whole_trace_gives_them(acme, otlp_post):
    """When the root comes, each buffered child is marked with what it became (a model call,
    a tool call, a note keeping it raw): the same states a trace sent whole ends with."""
    _register_the_tools(acme)
    outcomes = {}
    for split in (False, True):
        trace_id, spans = s.agent_trace()
        *children, root = spans
        children.append(s.span(trace_id, "GET /forecast", {"http.request.method": "GET"},
                               parent=s.sid(root), start_ms=320, end_ms=390))
        bodies = [s.protobuf(*children), s.protobuf(root)] if split else [
            s.protobuf(*children, root)]
        for body in bodies:
            assert otlp_post(acme, body).status_code == 200
        outcomes[split] = sorted(OtlpSpan.objects.filter(trace__trace_id=trace_id)
                                 .values_list("name", "state", "record_kind"))
    assert outcomes[True] == outcomes[False] == [
        ("GET /forecast", "unmapped", "annotation"),
        ("chat gpt-4.1", "recorded", "model_call"),
        ("execute_tool get_weather", "recorded", "tool_call"),
        ("execute_tool send_email", "recorded", "tool_call"),
        ("invoke_agent weather-agent", "recorded", "run"),
    ]


def test_a_retried_export_records_nothing_twice(acme, otlp_post):
    _trace_id, spans = s.agent_trace()
    body = s.protobuf(*spans)
    assert otlp_post(acme, body).status_code == 200
    head = Run.objects.get(tenant=acme).head_hash

    assert otlp_post(acme, body).status_code == 200
    assert Run.objects.get(tenant=acme).head_hash == head
    assert OtlpSpan.objects.filter(tenant=acme).count() == 4
    assert not OtlpSpan.objects.filter(state=OtlpSpanState.LATE).exists()


@pytest.mark.parametrize(("body", "content_type", "says"), [
    (b"\x0a\xff\xff\xff\x0f garbage", PROTOBUF, "not an OTLP ExportTraceServiceRequest"),
    (b"{not json", JSON, "not JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "spanId": "01"}]}]}]}',
     JSON, "resourceSpans[0].scopeSpans[0].spans[0].traceId: 'zz' is not hex"),
    (b'{"resourceSpans": "many"}', JSON, "not an OTLP ExportTraceServiceRequest"),
])
def test_a_malformed_body_is_a_clear_400_and_writes_nothing(acme, otlp_post, body,
                                                            content_type, says):
    response = otlp_post(acme, body, content_type=content_type)

    assert response.status_code == 400
    assert says in response.content.decode(errors="replace")
    assert not OtlpTrace.objects.exists()
    assert not Run.objects.exists()


def test_a_request_that_cannot_land_whole_lands_not_at_all(acme, otlp_post, record, make_run):
    """The second trace's model call id is taken by a different record: the first trace, fine
    on its own, is not written either."""
    _first_id, first = s.agent_trace()
    second_id, second = s.agent_trace()
    taken = make_run()
    taken["model_calls"][0]["call_id"] = f"otel-{second_id}-{s.sid(second[0])}"
    record(acme, taken)

    response = otlp_post(acme, s.protobuf(*first, *second))

    assert response.status_code == 409
    assert "nothing was recorded" in response.content.decode(errors="replace")
    assert not Run.objects.filter(run_id__startswith="otel-").exists()
    assert not OtlpTrace.objects.exists()
    assert not OtlpSpan.objects.exists()


def test_spans_without_valid_ids_are_rejected_and_counted(acme, otlp_post):
    trace_id, spans = s.agent_trace()
    broken = s.span(trace_id, "chat gpt-4.1", {"gen_ai.operation.name": "chat"})
    broken.trace_id = b"\x01" * 8

    answer = export_response(otlp_post(acme, s.protobuf(*spans, broken)))

    assert answer.partial_success.rejected_spans == 1
    assert "trace_id has 8 bytes, not 16" in answer.partial_success.error_message
    assert Run.objects.filter(tenant=acme, run_id=run_id_for(trace_id)).exists()


def test_unsupported_content_type_is_415(acme, otlp_post):
    response = otlp_post(acme, b"<spans/>", content_type="application/xml")
    assert response.status_code == 415
    assert "application/x-protobuf" in response.json()["message"]


def test_unsupported_content_encoding_is_415(acme, otlp_post):
    _, spans = s.agent_trace()
    response = otlp_post(acme, s.protobuf(*spans), **{"Content-Encoding": "br"})
    assert response.status_code == 415


def test_too_large_bodies_are_413_compressed_or_not(acme, otlp_post, settings):
    settings.LEDGER_OTLP_MAX_BYTES = 2048
    _, spans = s.agent_trace()
    big = s.protobuf(*spans) + s.protobuf(*spans)  # concatenated messages merge: still valid
    assert len(big) > 2048
    assert otlp_post(acme, big).status_code == 413

    zeros = s.gzipped(b"\x00" * 1_000_000)  # small on the wire, a megabyte inflated
    assert len(zeros) < 2048
    response = otlp_post(acme, zeros, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert "decompressed body is over the limit" in response.content.decode(errors="replace")
    assert not OtlpTrace.objects.exists()

    small = s.gzipped(s.protobuf(*spans))
    assert otlp_post(acme, small, **{"Content-Encoding": "gzip"}).status_code == 200


def test_without_a_key_is_401_and_without_the_ingest_scope_is_403(acme, otlp_post):
    _, spans = s.agent_trace()
    anonymous = Client().post("/v1/traces", data=s.protobuf(*spans), content_type=PROTOBUF)
    assert anonymous.status_code == 401
    wrong = Client().post("/v1/traces", data=s.protobuf(*spans), content_type=PROTOBUF,
                          headers={"Authorization": "Bearer lpk_nope_nope"})
    assert wrong.status_code == 401
    reader = otlp_post(acme, s.protobuf(*spans), scopes=("view_ledger",))
    assert reader.status_code == 403
    assert not OtlpTrace.objects.exists()


def test_a_globex_key_writes_only_into_globex(acme, globex, otlp_post):
    """There is no way to name a tenant: the key's own is the only one written, even for a
    trace id acme is buffering."""
    trace_id, spans = s.agent_trace()
    *children, root = spans
    otlp_post(acme, s.protobuf(*children))

    response = otlp_post(globex, s.protobuf(root), **{"X-Ledger-Tenant": "acme"})

    assert response.status_code == 200
    assert not Run.objects.filter(tenant=acme).exists()
    assert OtlpSpan.objects.filter(tenant=acme, state="pending").count() == 3
    run = Run.objects.get(tenant=globex, run_id=run_id_for(trace_id))
    assert _timeline(run) == ["annotation:run_status"]  # only the root, nothing of acme's
    assert OtlpTrace.objects.filter(trace_id=trace_id).count() == 2


def test_action_class_comes_from_the_registered_tool(acme, otlp_post):
    Tool.objects.create(tenant=acme, name="send_email", action_class="write")
    _, spans = s.agent_trace()
    otlp_post(acme, s.protobuf(*spans))
    assert dict(ToolCall.objects.values_list("tool__name", "action_class")) == {
        "get_weather": "exfil", "send_email": "write"}


def test_an_unregistered_tool_is_never_silently_read_it_is_flagged_as_exfil(acme, otlp_post):
    _, spans = s.agent_trace(failing_tool=False)
    otlp_post(acme, s.protobuf(*spans))
    call = ToolCall.objects.select_related("tool").get(tool__name="get_weather")
    assert call.action_class == "exfil"  # the strictest class until someone registers it
    assert call.tool.action_class == "exfil"  # and so it enters the registry
    flag = Annotation.objects.get(target_call_id=call.call_id)
    assert flag.data == {"label": "unregistered_tool", "tool": "get_weather",
                         "action_class": "exfil"}
    assert "not in the tool registry" in flag.body


def test_unmappable_spans_are_kept_raw_on_the_run(acme, otlp_post):
    trace_id, spans = s.agent_trace(failing_tool=False)
    root = spans[-1]
    http = s.span(trace_id, "GET /forecast", {"http.request.method": "GET",
                                              "url.full": "https://api.example/forecast"},
                  parent=s.sid(root), kind=3, start_ms=330, end_ms=390)
    retrieval = s.span(trace_id, "retrieval docs", {"gen_ai.operation.name": "retrieval",
                                                    "gen_ai.data_source.id": "kb-1"},
                       parent=s.sid(root), start_ms=5, end_ms=8)
    otlp_post(acme, s.protobuf(http, retrieval, *spans))

    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    notes = {a.data["otel_span"]["name"]: a for a in Annotation.objects.filter(
        run=run, annotation_kind=AnnotationKind.NOTE) if "otel_span" in a.data}
    assert set(notes) == {"GET /forecast", "retrieval docs"}
    assert notes["GET /forecast"].data["otel_span"]["attributes"]["url.full"] == (
        "https://api.example/forecast")
    assert "'retrieval' has no ledger record" in notes["retrieval docs"].body
    assert OtlpSpan.objects.filter(trace__trace_id=trace_id, state="unmapped").count() == 2
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_a_trace_without_genai_spans_records_no_run_but_keeps_its_spans(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "GET /health", {"http.request.method": "GET"}, kind=2)
    answer = export_response(otlp_post(acme, s.protobuf(root)))

    assert answer.partial_success.rejected_spans == 0
    assert "no GenAI spans" in answer.partial_success.error_message
    assert not Run.objects.exists()
    assert OtlpSpan.objects.get(trace__trace_id=trace_id).state == OtlpSpanState.UNMAPPED


def test_deprecated_attribute_names_are_read(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent old", {"gen_ai.operation.name": "invoke_agent",
                                                 "gen_ai.agent.name": "old-agent"}, end_ms=100)
    legacy = s.span(trace_id, "openai.chat", {
        "gen_ai.system": "openai", "gen_ai.request.model": "gpt-3.5-turbo",
        "gen_ai.usage.prompt_tokens": 11, "gen_ai.usage.completion_tokens": 7,
        "gen_ai.prompt": json.dumps([{"role": "user", "content": "hi"}]),
        "gen_ai.completion": json.dumps([{"role": "assistant", "content": "hello"}]),
    }, parent=s.sid(root), start_ms=1, end_ms=50)
    by_events = s.span(trace_id, "chat claude", {
        "gen_ai.operation.name": "chat", "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-3"}, parent=s.sid(root), start_ms=51, end_ms=90,
        events=[("gen_ai.system.message", {"gen_ai.system": "anthropic", "content": "be brief"}),
                ("gen_ai.user.message", {"content": "hi again"}),
                ("gen_ai.choice", {"index": 0, "finish_reason": "stop",
                                   "message": json.dumps({"content": "hey"})})])
    otlp_post(acme, s.protobuf(legacy, by_events, root))

    first, second = ModelCall.objects.filter(tenant=acme).order_by("seq")
    assert (first.provider, first.model, first.input_tokens, first.output_tokens) == (
        "openai", "gpt-3.5-turbo", 11, 7)
    assert first.messages == [{"role": "user", "content": "hi"}]
    assert first.response == {"messages": [{"role": "assistant", "content": "hello"}]}
    assert second.provider == "anthropic"
    assert [m["role"] for m in second.messages] == ["system", "user"]
    assert second.messages[1]["content"] == "hi again"
    assert (second.response or {})["messages"][0]["message"] == {"content": "hey"}


def test_messages_captured_on_the_details_event_are_recorded(acme, otlp_post):
    trace_id = s.new_trace_id()
    chat = s.span(trace_id, "chat gpt-4.1", {"gen_ai.operation.name": "chat",
                                             "gen_ai.provider.name": "openai",
                                             "gen_ai.request.model": "gpt-4.1"},
                  events=[("gen_ai.client.inference.operation.details", {
                      "gen_ai.system_instructions": json.dumps([{"type": "text",
                                                                  "content": "be terse"}]),
                      "gen_ai.input.messages": json.dumps([{"role": "user", "parts": []}]),
                      "gen_ai.output.messages": json.dumps([{"role": "assistant",
                                                             "parts": []}])})])
    otlp_post(acme, s.protobuf(chat))

    call = ModelCall.objects.get(tenant=acme)
    assert [m["role"] for m in call.messages] == ["system", "user"]
    assert call.response == {"messages": [{"role": "assistant", "parts": []}]}
    assert call.run.agent.agent_id == "otel:weather-app"  # no agent span: the service


def test_mcp_tool_calls_and_nested_agents(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent planner", {"gen_ai.operation.name": "invoke_agent",
                                                     "gen_ai.agent.name": "planner"},
                  end_ms=500)
    sub = s.span(trace_id, "invoke_agent researcher", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "researcher"},
        parent=s.sid(root), start_ms=10, end_ms=400)
    mcp = s.span(trace_id, "tools/call search_docs", {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "search_docs",
        "gen_ai.tool.call.arguments": '{"q": "otel"}', "mcp.session.id": "s1"},
        parent=s.sid(sub), start_ms=20, end_ms=60, kind=3)
    wrapped = s.span(trace_id, "execute_tool fetch_page", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "fetch_page"},
        parent=s.sid(sub), start_ms=70, end_ms=120)
    inner = s.span(trace_id, "tools/call fetch_page", {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch_page"},
        parent=s.sid(wrapped), start_ms=71, end_ms=119, kind=3)
    server = s.span(trace_id, "tools/call fetch_page", {
        "mcp.method.name": "tools/call", "gen_ai.tool.name": "fetch_page"},
        parent=s.sid(inner), start_ms=72, end_ms=118, kind=2)
    otlp_post(acme, s.protobuf(server, inner, wrapped, mcp, sub, root))

    run = Run.objects.get(tenant=acme)
    assert run.agent.name == "planner"
    calls = {c.tool.name: c for c in ToolCall.objects.filter(run=run).select_related("step")}
    assert set(calls) == {"search_docs", "fetch_page"}
    assert calls["search_docs"].input == {"q": "otel"}
    assert calls["search_docs"].step.title == "invoke_agent researcher"
    raw = OtlpSpan.objects.filter(trace__trace_id=trace_id, state="unmapped")
    assert sorted(raw.values_list("span_id", flat=True)) == sorted([s.sid(inner), s.sid(server)])


def test_names_with_spaces_and_slashes_become_ledger_ids(acme, otlp_post):
    """Frameworks name agents and tools in prose ("Support Agent"); the ledger's ids are
    restricted, so the name becomes an id of allowed characters and stays as the name."""
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent Support Agent", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Support Agent",
        "gen_ai.conversation.id": "conv 42/alpha"}, end_ms=500)
    tool = s.span(trace_id, "execute_tool Search Web", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "Search Web",
        "gen_ai.tool.call.id": "call #7"}, parent=s.sid(root), start_ms=10, end_ms=60)
    otlp_post(acme, s.protobuf(tool, root))
    run = Run.objects.select_related("agent").get(tenant=acme)
    assert (run.agent.agent_id, run.agent.name) == ("Support-Agent", "Support Agent")
    assert run.trigger_ref == "conv-42-alpha"
    assert run.metadata["conversation_id"] == "conv 42/alpha"
    call = ToolCall.objects.select_related("tool").get(run=run)
    assert (call.tool.name, call.tool_call_ref) == ("Search-Web", "call-7")


def test_a_tool_span_buffered_before_its_root_takes_its_registered_class(acme, otlp_post):
    with setting_up():
        Tool.objects.create(tenant=acme, name="send_email", action_class="exfil")
    _, spans = s.agent_trace()
    *children, root = spans
    assert otlp_post(acme, s.protobuf(*children)).status_code == 200  # buffered, pending
    assert otlp_post(acme, s.protobuf(root)).status_code == 200
    assert ToolCall.objects.get(tool__name="send_email").action_class == "exfil"
