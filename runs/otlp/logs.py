"""GenAI events sent as OTLP logs (``POST /v1/logs``): content capture in event mode.

Instrumentations that capture content as events (``gen_ai.client.inference.operation.details``,
or the older ``gen_ai.user.message`` / ``gen_ai.choice`` ...) emit log records carrying the
trace and span ids of the call. Each becomes a span event on that span, where ``genai`` reads
events already:

- its span is buffered and pending: the event is added to it;
- its span has not arrived (the usual case: the record is emitted before the span ends): the
  event waits (``OtlpEvent``) and joins the span when it comes;
- its span was recorded already: the events are a note on the run, on the call when the span
  became one.

Records that are not GenAI events, or carry no trace context, are rejected and counted in the
answer's partial success (the specification's ``rejected_log_records``): never silently kept
or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

from core.models import Tenant

from ..annotations import annotate
from ..deferred_batch import DeferredIn
from ..models import (
    AnnotationKind,
    DeferredReason,
    DeferredSource,
    OtlpEvent,
    OtlpSpan,
    OtlpSpanState,
    OtlpTrace,
    Run,
)
from .assembly import call_id_for, run_id_for
from .wire import (
    SpanDict,
    attributes_of,
    encode_response,
    items,
    parse_message,
    rewrite_ids,
    value_of,
)

EVENT_PREFIX = "gen_ai."


@dataclass
class DecodedEvents:
    #: span events, each with the ``trace_id`` and ``span_id`` it belongs to
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)


def parse_request(body: bytes, content_type: str) -> ExportLogsServiceRequest:
    return parse_message(body, content_type, ExportLogsServiceRequest(), "resourceLogs",
                         _hex_ids_to_base64)


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    for i, resource in enumerate(items(data, "resourceLogs", "resource_logs")):
        for j, scope in enumerate(items(resource, "scopeLogs", "scope_logs")):
            for k, record in enumerate(items(scope, "logRecords", "log_records")):
                rewrite_ids(record, f"resourceLogs[{i}].scopeLogs[{j}].logRecords[{k}]")


def events_of(request: ExportLogsServiceRequest) -> DecodedEvents:
    out = DecodedEvents()
    for resource_logs in request.resource_logs:
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                attrs = attributes_of(record.attributes)
                name = record.event_name or str(attrs.pop("event.name", "") or "")
                if not name.startswith(EVENT_PREFIX):
                    out.rejected.append(f"a log record named {name[:100]!r} is not a GenAI "
                                        "event")
                    continue
                if len(record.trace_id) != 16 or len(record.span_id) != 8 or not any(
                        record.trace_id) or not any(record.span_id):
                    out.rejected.append(f"GenAI event {name!r} has no trace or span id to "
                                        "join its span by")
                    continue
                body = value_of(record.body) if record.HasField("body") else None
                if isinstance(body, dict):
                    attrs.update(body)
                elif body is not None:
                    attrs["content"] = body
                out.events.append({"trace_id": record.trace_id.hex(),
                                   "span_id": record.span_id.hex(), "name": name,
                                   "time_unix_nano": record.time_unix_nano
                                   or record.observed_time_unix_nano,
                                   "attributes": attrs})
    return out


def export_response(content_type: str, rejected: int, message: str) -> bytes:
    response = ExportLogsServiceResponse()
    if rejected or message:
        response.partial_success.rejected_log_records = rejected
        response.partial_success.error_message = message
    return encode_response(content_type, response)


def _span_event(event: dict[str, Any]) -> dict[str, Any]:
    return {"name": event["name"], "time_unix_nano": event["time_unix_nano"],
            "attributes": event["attributes"]}


# -- the service -------------------------------------------------------------------------------


def receive_events(tenant: Tenant, decoded: DecodedEvents, recorded_by: str = "",
                   now: datetime | None = None) -> None:
    """Join ``decoded``'s events to their spans in ``tenant`` (see the module), atomically."""
    now = now or timezone.now()
    by_span: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for event in decoded.events:
        by_span.setdefault((event["trace_id"], event["span_id"]), []).append(event)
    if not by_span:
        return
    trace_ids = sorted({trace_id for trace_id, _ in by_span})
    with transaction.atomic():
        traces = {t.pk: t for t in OtlpTrace.objects.select_for_update().filter(
            tenant=tenant, trace_id__in=trace_ids).order_by("trace_id")}
        span_ids = {span_id for _, span_id in by_span}
        spans = {(traces[s.trace_id].trace_id, s.span_id): s for s in OtlpSpan.objects.filter(
            tenant=tenant, trace__in=list(traces), span_id__in=span_ids)}
        waiting: list[OtlpEvent] = []
        for (trace_id, span_id), events in by_span.items():
            stored = spans.get((trace_id, span_id))
            if stored is None:
                waiting += [OtlpEvent(tenant=tenant, trace_id=trace_id, span_id=span_id,
                                      body=_span_event(e), received_at=now) for e in events]
            elif stored.state == OtlpSpanState.PENDING:
                body = stored.body
                body["events"] = [*body.get("events", []), *map(_span_event, events)]
                OtlpSpan.objects.filter(tenant=tenant, pk=stored.pk).update(body=body)
            elif traces[stored.trace_id].recorded_at is None:
                # no run to note them on (the trace recorded none): they wait with it
                waiting += [OtlpEvent(tenant=tenant, trace_id=trace_id, span_id=span_id,
                                      body=_span_event(e), received_at=now) for e in events]
            else:
                _note(tenant, traces[stored.trace_id], stored,
                      events, recorded_by)
        OtlpEvent.objects.bulk_create(waiting)


def _note(tenant: Tenant, trace: OtlpTrace, span: OtlpSpan, events: list[dict[str, Any]],
          recorded_by: str) -> None:
    target = (call_id_for(trace.trace_id, span.span_id)
              if span.record_kind in ("model_call", "tool_call") else "")
    annotate(tenant, AnnotationKind.NOTE,
             f"{len(events)} GenAI event(s) of span {span.name[:200]!r} arrived after the span "
             "was recorded; kept here.", run_id=trace.run_id, by=recorded_by or None,
             target_call_id=target,
             data={"span_id": span.span_id, "events": [_span_event(e) for e in events]})


def join_waiting_events(tenant: Tenant, spans: list[SpanDict]) -> None:
    """Add the events waiting for ``spans`` to them (and let the waiting rows go): called by
    the span receiver inside its transaction, before the spans are assembled."""
    wanted = {(s["trace_id"], s["span_id"]): s for s in spans}
    if not wanted:
        return
    rows = list(OtlpEvent.objects.filter(
        tenant=tenant, trace_id__in={trace_id for trace_id, _ in wanted}).order_by("pk"))
    joined = []
    for row in rows:
        span = wanted.get((row.trace_id, row.span_id))
        if span is not None:
            span["events"] = [*span.get("events", []), row.body]
            joined.append(row.pk)
    if joined:
        OtlpEvent.objects.filter(tenant=tenant, pk__in=joined).delete()


def defer_orphan_events(now: datetime | None = None, limit: int = 1000) -> int:
    """Events still waiting for their span twice the quiet period after they came: the span
    is not coming (a trace the quiet period sealed without it, or one that never arrived), so
    each becomes a deferred item, linked to the trace's run where there is one, and stops
    waiting. Beat task body (with the quiet traces); how many."""
    from ..deferred import keep_deferred

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=2 * settings.LEDGER_OTLP_QUIET_SECONDS)
    with transaction.atomic():
        orphans = list(OtlpEvent.objects.select_for_update(skip_locked=True).filter(
            received_at__lt=cutoff).select_related("tenant").order_by("pk")[:limit])
        by_tenant: dict[int, list[OtlpEvent]] = {}
        for event in orphans:
            by_tenant.setdefault(event.tenant_id, []).append(event)
        for events in by_tenant.values():
            tenant = events[0].tenant
            runs = set(Run.objects.filter(tenant=tenant, run_id__in={
                run_id_for(e.trace_id) for e in events}).values_list("run_id", flat=True))
            keep_deferred(tenant, [DeferredIn(
                DeferredSource.OTLP_TRACE_GAP, DeferredReason.EVENT_WITHOUT_SPAN,
                f"GenAI event {str(e.body.get('name', ''))[:100]!r} for span {e.span_id} of "
                f"trace {e.trace_id}: the span never arrived",
                {"trace_id": e.trace_id, "span_id": e.span_id, "event": e.body},
                run_id_for(e.trace_id) if run_id_for(e.trace_id) in runs else "",
                f"otlp-event:{e.pk}") for e in events], "ledger-portal")
        OtlpEvent.objects.filter(pk__in=[e.pk for e in orphans]).delete()
    return len(orphans)
