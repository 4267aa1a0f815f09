"""OTLP data the ledger cannot place is never invisible: spans no record fits, traces without a
run, a root or a parent that never arrived become deferred items linked to their run, the
exporter is told in the partial success answer, and the run's timeline says what is missing."""

from __future__ import annotations

import pytest

from runs.deferred import apply_deferred, keep_deferred
from runs.deferred_batch import DeferredIn
from runs.integrity import verify_tenant
from runs.models import DeferredItem, ModelCall, OtlpSpan, Run
from runs.otlp import wire
from runs.otlp.assembly import run_id_for
from runs.otlp.services import assemble_idle_traces

from . import spans as s
from .conftest import export_response

pytestmark = pytest.mark.django_db

WORDS = "deferred pending ledger schema reconciliation"


def items(**filters):
    return {i.reason_code: i for i in DeferredItem.objects.filter(**filters)}


def test_spans_no_record_fits_are_deferred_on_their_run_and_reported(acme, otlp_post):
    trace_id, spans = s.agent_trace(failing_tool=False)
    root = spans[-1]
    http = s.span(trace_id, "GET /forecast", {"http.request.method": "GET"},
                  parent=s.sid(root), kind=3, start_ms=330, end_ms=390)
    retrieval = s.span(trace_id, "retrieval docs", {"gen_ai.operation.name": "retrieval"},
                       parent=s.sid(root), start_ms=5, end_ms=8)

    answer = export_response(otlp_post(acme, s.protobuf(http, retrieval, *spans)))

    assert answer.partial_success.rejected_spans == 0  # kept, not rejected
    assert f"2 item(s) of run {run_id_for(trace_id)} {WORDS}" in (
        answer.partial_success.error_message)
    deferred = {i.payload["name"]: i for i in DeferredItem.objects.filter(tenant=acme)}
    assert set(deferred) == {"GET /forecast", "retrieval docs"}
    item = deferred["retrieval docs"]
    assert (item.source, item.reason_code, item.run_id) == (
        "otlp_span", "unmapped_span", run_id_for(trace_id))
    assert "'retrieval' has no ledger record" in item.reason
    assert item.payload["span_id"] == s.sid(retrieval)  # the span as received


def test_a_retried_export_defers_nothing_twice(acme, otlp_post):
    trace_id, spans = s.agent_trace(failing_tool=False)
    extra = s.span(trace_id, "GET /x", {}, parent=s.sid(spans[-1]))
    body = s.protobuf(extra, *spans)
    otlp_post(acme, body)
    otlp_post(acme, body)
    assert DeferredItem.objects.count() == 1


def test_a_trace_without_genai_spans_is_one_deferred_item_without_a_run(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "GET /health", {"http.request.method": "GET"}, kind=2)
    child = s.span(trace_id, "SELECT 1", {"db.system": "postgresql"}, parent=s.sid(root))

    answer = export_response(otlp_post(acme, s.protobuf(child, root)))

    assert WORDS in answer.partial_success.error_message
    item = DeferredItem.objects.get(tenant=acme)
    assert (item.reason_code, item.run_id) == ("trace_without_run", "")
    assert item.payload["span_count"] == 2
    assert not Run.objects.exists()


def test_a_parent_that_never_arrived_is_a_gap_on_the_run(acme, otlp_post):
    trace_id, spans = s.agent_trace(failing_tool=False)
    lost = s.new_span_id()
    orphan = s.span(trace_id, "execute_tool lookup", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup"},
        parent=lost, start_ms=500, end_ms=600)

    otlp_post(acme, s.protobuf(orphan, *spans))

    gap = items(tenant=acme)["missing_parent"]
    assert (gap.source, gap.run_id) == ("otlp_trace_gap", run_id_for(trace_id))
    assert gap.payload["parent_span_id"] == lost
    assert gap.payload["children"][0]["span_id"] == s.sid(orphan)


def test_a_trace_sealed_without_its_root_is_a_gap_shown_on_the_timeline(acme, alice, otlp_post,
                                                                        settings, client):
    settings.LEDGER_OTLP_QUIET_SECONDS = 0
    trace_id, (chat, weather, _email, _root) = s.agent_trace()
    otlp_post(acme, s.protobuf(chat, weather))
    assert assemble_idle_traces() == {"recorded": 1, "closed": 0}
    assert assemble_idle_traces() == {"recorded": 0, "closed": 1}

    found = items(tenant=acme)
    assert set(found) == {"missing_root", "missing_parent"}  # the root is both
    assert found["missing_root"].run_id == run_id_for(trace_id)

    client.force_login(alice)
    page = client.get(f"/runs/acme/{run_id_for(trace_id)}/").content.decode()
    assert "Deferred pending ledger schema reconciliation" in page
    assert 'id="deferred-count">2 items<' in page


def test_a_span_a_newer_mapping_places_is_applied_onto_its_closed_run(acme, alice, otlp_post):
    trace_id, (chat, weather, root) = s.agent_trace(failing_tool=False)
    otlp_post(acme, s.protobuf(weather, root))
    run = Run.objects.get(run_id=run_id_for(trace_id))
    assert run.status == "succeeded"
    # What a portal that did not know `chat` kept back from this trace:
    decoded = wire.spans_of(wire.parse_request(s.protobuf(chat), wire.PROTOBUF)).spans[0]
    keep_deferred(acme, [DeferredIn("otlp_span", "unmapped_span", "not known then", decoded,
                                    run.run_id, f"otlp-span:{trace_id}:{s.sid(chat)}")])
    item = DeferredItem.objects.get()

    assert apply_deferred(item, by=alice).outcome == "applied"
    assert apply_deferred(item, by=alice).outcome == "taken"

    call = ModelCall.objects.get(run=run)
    assert call.input_tokens == 120
    item.refresh_from_db()
    assert {"kind": "model_call", "id": call.call_id} in item.applied_records
    assert verify_tenant(acme, run_id=run.run_id).intact
    assert not OtlpSpan.objects.filter(span_id=s.sid(chat)).exclude(state="recorded").exists()


def test_a_span_after_its_run_closed_is_deferred_and_applied_onto_the_run(acme, alice,
                                                                          otlp_post):
    trace_id, (chat, weather, root) = s.agent_trace(failing_tool=False)
    otlp_post(acme, s.protobuf(weather, root))
    answer = export_response(otlp_post(acme, s.protobuf(chat)))

    assert "arrived after run" in answer.partial_success.error_message
    assert WORDS in answer.partial_success.error_message
    item = DeferredItem.objects.get(reason_code="late_span")
    assert item.run_id == run_id_for(trace_id)

    assert apply_deferred(item, by=alice).outcome == "applied"
    run = Run.objects.get(run_id=run_id_for(trace_id))
    assert ModelCall.objects.filter(run=run).count() == 1
    assert OtlpSpan.objects.get(span_id=s.sid(chat)).state == "recorded"
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_a_trace_an_older_mapping_recorded_no_run_for_becomes_its_run_when_applied(
        acme, alice):
    from django.utils import timezone

    from runs.models import OtlpTrace, ToolCall

    # As a portal that knew no GenAI convention left an agent trace: closed, no run, every
    # span unmapped in the buffer, one deferred item for the trace.
    trace_id, spans = s.agent_trace(failing_tool=False)
    decoded = wire.spans_of(wire.parse_request(s.protobuf(*spans), wire.PROTOBUF)).spans
    now = timezone.now()
    trace = OtlpTrace.objects.create(tenant=acme, trace_id=trace_id, run_id=run_id_for(trace_id),
                                     state="closed", first_received_at=now,
                                     last_activity_at=now, closed_at=now)
    for body in decoded:
        OtlpSpan.objects.create(tenant=acme, trace=trace, span_id=body["span_id"],
                                parent_span_id=body["parent_span_id"], name=body["name"],
                                state="unmapped", body=body, received_at=now)
    keep_deferred(acme, [DeferredIn("otlp_span", "trace_without_run", "no run then",
                                    {"trace_id": trace_id}, "", f"otlp-trace:{trace_id}")])
    item = DeferredItem.objects.get()

    assert apply_deferred(item, by=alice).outcome == "applied"
    assert apply_deferred(item, by=alice).outcome == "taken"

    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.status == "succeeded"
    assert ModelCall.objects.filter(run=run).count() == 1
    assert ToolCall.objects.filter(run=run).count() == 1
    item.refresh_from_db()
    assert item.run_id == run.run_id
    assert {"kind": "run", "id": run.run_id} in item.applied_records
    assert set(OtlpSpan.objects.filter(trace=trace).values_list("state", flat=True)) == {
        "recorded"}
    assert verify_tenant(acme, run_id=run.run_id).intact
