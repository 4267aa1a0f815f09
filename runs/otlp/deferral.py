"""What OTLP ingestion could not place, kept as deferred items (runs/deferred.py).

Called from the span service at three points (small hooks, so the assembly stays its own):

- after a request's spans are planned and stored: spans no ledger record fits (still chained
  on their run as notes carrying the span), a trace with no GenAI span (no run at all), and,
  for a trace closed by its root, parents that never arrived;
- when the quiet period seals an open trace without its root: the missing root, and parents
  that never arrived;
- when reconciliation asks whether a deferred span, or a trace that recorded no run, maps now
  (``span_now_maps``, ``trace_now_maps``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from django.utils import timezone

from core.models import Tenant

from ..deferred_batch import DeferredIn
from ..ingest_schema import RunIn
from ..models import (
    DeferredItem,
    DeferredReason,
    DeferredSource,
    OtlpSpan,
    OtlpSpanState,
    OtlpTrace,
    OtlpTraceState,
)
from . import assembly
from .wire import SpanDict

#: a trace without a run keeps its spans in the item up to this many (all stay in the buffer)
SPANS_IN_ITEM = 50


class TraceWork(Protocol):
    """What the span service knows of one trace in one request (its ``_TraceWork``)."""

    trace: OtlpTrace
    new: list[SpanDict]
    context: assembly.TraceContext
    outcomes: dict[str, assembly.Outcome]


def keep_unplaced(tenant: Tenant, work: Iterable[TraceWork], received_by: str) -> list[str]:
    """Defer what these traces' spans could not place; a note per trace for the exporter."""
    from ..deferred import keep_deferred

    notes: list[str] = []
    items: list[DeferredIn] = []
    for item in work:
        trace = item.trace
        found = _unplaced_spans(item) + _without_run(item)
        closed_now = trace.state == OtlpTraceState.CLOSED and (
            trace.closed_at == trace.last_activity_at)  # by this request, not before it
        if closed_now and trace.recorded_at is not None:
            # every span of the trace is at hand: the earlier ones' parents, and the new ones
            spans = {sid: (parent, "") for sid, parent in item.context.parents.items()}
            spans.update({s["span_id"]: (s["parent_span_id"], s["name"]) for s in item.new})
            found += _missing_parents(trace, spans)
        if found:
            items += found
            notes.append(_note(trace, found))
    keep_deferred(tenant, items, received_by)
    return notes


def keep_quiet_close(trace: OtlpTrace, received_by: str) -> int:
    """The quiet period sealed ``trace``'s run without its root span: defer the gap."""
    from ..deferred import keep_deferred

    found = [DeferredIn(
        DeferredSource.OTLP_TRACE_GAP, DeferredReason.MISSING_ROOT,
        f"trace {trace.trace_id} was sealed after the quiet period without its root span; "
        "what the root would have said (the run's end, its outcome) is missing",
        {"trace_id": trace.trace_id}, trace.run_id, f"otlp-gap:{trace.trace_id}:root",
    ), *_missing_parents(trace, {span_id: (parent, name) for span_id, parent, name in
                                 OtlpSpan.objects.filter(trace=trace).values_list(
                                     "span_id", "parent_span_id", "name")})]
    return keep_deferred(trace.tenant, found, received_by)


def _note(trace: OtlpTrace, found: list[DeferredIn]) -> str:
    where = f"run {trace.run_id}" if trace.recorded_at else f"trace {trace.trace_id}"
    return (f"{len(found)} item(s) of {where} deferred pending ledger schema reconciliation "
            f"(GET /api/v1/deferred/?run_id={trace.run_id} or `ledger reconcile --list`)")


def _unplaced_spans(item: TraceWork) -> list[DeferredIn]:
    """Spans no record fits, and spans that came after their run closed (applying them
    appends what they map to onto the closed run)."""
    bodies = {s["span_id"]: s for s in item.new}
    found = []
    for span_id, outcome in item.outcomes.items():
        span = bodies.get(span_id)
        if span is None:
            continue
        if outcome.state == OtlpSpanState.UNMAPPED and outcome.deferred:
            code = (DeferredReason.INVALID_SPAN if outcome.reason.startswith("not a valid")
                    else DeferredReason.UNMAPPED_SPAN)
            reason = outcome.reason
        elif outcome.state == OtlpSpanState.LATE and item.trace.recorded_at is not None:
            code, reason = DeferredReason.LATE_SPAN, "arrived after its run closed"
        else:
            continue
        found.append(DeferredIn(
            DeferredSource.OTLP_SPAN, code,
            f"OpenTelemetry span {span['name'][:200]!r}: {reason}", span,
            item.trace.run_id, f"otlp-span:{item.trace.trace_id}:{span_id}"))
    return found


def _without_run(item: TraceWork) -> list[DeferredIn]:
    trace = item.trace
    if trace.state != OtlpTraceState.CLOSED or trace.recorded_at is not None:
        return []
    unmapped = [s for s in item.new if item.outcomes.get(s["span_id"]) is not None
                and item.outcomes[s["span_id"]].state == OtlpSpanState.UNMAPPED]
    if not unmapped:
        return []
    return [DeferredIn(
        DeferredSource.OTLP_SPAN, DeferredReason.TRACE_WITHOUT_RUN,
        f"trace {trace.trace_id} has no span the ledger maps to a run (no GenAI agent, model "
        f"or tool span): {len(unmapped)} span(s) kept in the span buffer, no run recorded",
        {"trace_id": trace.trace_id, "span_count": len(unmapped),
         "spans": unmapped[:SPANS_IN_ITEM]}, "", f"otlp-trace:{trace.trace_id}:no-run")]


def _missing_parents(trace: OtlpTrace, spans: dict[str, tuple[str, str]]
                     ) -> list[DeferredIn]:
    """Parents named by ``spans`` (span id -> (parent id, name): the whole trace) that are
    not among them."""
    orphans: dict[str, list[dict[str, str]]] = {}
    for span_id, (parent, name) in sorted(spans.items()):
        if parent and parent not in spans:
            orphans.setdefault(parent, []).append({"span_id": span_id, "name": name})
    return [DeferredIn(
        DeferredSource.OTLP_TRACE_GAP, DeferredReason.MISSING_PARENT,
        f"span {parent} of trace {trace.trace_id} never arrived; {len(children)} span(s) "
        "name it as their parent", {"trace_id": trace.trace_id, "parent_span_id": parent,
                                    "children": children},
        trace.run_id, f"otlp-gap:{trace.trace_id}:parent:{parent}")
        for parent, children in sorted(orphans.items())]


def span_now_maps(item: DeferredItem) -> dict[str, list[dict[str, Any]]] | None:
    """The records a deferred span becomes under the current mapping, or None (still none).
    Its buffer row is marked recorded (in the caller's transaction)."""
    from .services import _headers_of, _known_spans, _tool_classes

    span: SpanDict = item.payload
    trace = OtlpTrace.objects.filter(tenant=item.tenant, trace_id=span.get("trace_id")).first()
    if trace is None or trace.recorded_at is None:
        return None
    header = _headers_of(item.tenant, [trace]).get(trace.trace_id)
    if header is None:
        return None
    context = assembly.TraceContext()
    for span_id, (parent, record_kind, _, _) in _known_spans({trace.trace_id: trace}).get(
            trace.pk, {}).items():
        context.parents[span_id] = parent
        if record_kind:
            context.record_kinds[span_id] = record_kind
            context.steps_recorded += record_kind == "step"
    records = assembly.assemble(trace.trace_id, [span], header["run_span_id"], context,
                                _tool_classes(item.tenant, [span]))
    outcome = records.outcomes.get(span["span_id"])
    if outcome is None or outcome.state != OtlpSpanState.RECORDED:
        return None
    OtlpSpan.objects.filter(trace=trace, span_id=span["span_id"]).update(
        state=OtlpSpanState.RECORDED, record_kind=outcome.record_kind)
    return {kind: [r.model_dump() for r in rows] for kind, rows in (
        ("steps", records.steps), ("model_calls", records.model_calls),
        ("tool_calls", records.tool_calls)) if rows}


def trace_now_maps(item: DeferredItem) -> RunIn | None:
    """The run a trace that recorded none becomes under the current mapping (closed, as the
    trace was), or None. Its buffer rows take their outcomes, in the caller's transaction;
    spans of it that still fit no record are deferred in their turn."""
    from ..deferred import keep_deferred
    from .services import _run_in, _tool_classes

    trace = OtlpTrace.objects.select_for_update().filter(
        tenant=item.tenant, trace_id=item.payload.get("trace_id", "")).first()
    if trace is None or trace.recorded_at is not None:
        return None
    spans: list[SpanDict] = list(OtlpSpan.objects.filter(trace=trace).order_by("id")
                                 .values_list("body", flat=True))
    if not spans or not assembly.has_genai(spans):
        return None
    header = assembly.run_header(trace.trace_id, spans)
    records = assembly.assemble(trace.trace_id, spans, header["run_span_id"],
                                assembly.TraceContext(), _tool_classes(item.tenant, spans))
    run_span = next((s for s in spans if s["span_id"] == header["run_span_id"]), None)
    root = next((s for s in spans if assembly.is_root(s)), None)
    status, ended = assembly.run_end(header, run_span, root,
                                     max(s["end_time_unix_nano"] for s in spans))
    groups: dict[tuple[str, str], list[str]] = {}
    for span_id, outcome in records.outcomes.items():
        groups.setdefault((outcome.state, outcome.record_kind), []).append(span_id)
    for (state, record_kind), span_ids in groups.items():
        OtlpSpan.objects.filter(trace=trace, span_id__in=span_ids).update(
            state=state, record_kind=record_kind)
    now = timezone.now()
    trace.recorded_at, trace.state = now, OtlpTraceState.CLOSED
    trace.closed_at = trace.closed_at or now
    trace.save()
    work = _Recorded(trace, spans, assembly.TraceContext(), records.outcomes)
    keep_deferred(item.tenant, _unplaced_spans(work), "ledger-portal")
    return _run_in(header, records, status, ended)


@dataclass
class _Recorded:
    trace: OtlpTrace
    new: list[SpanDict]
    context: assembly.TraceContext
    outcomes: dict[str, assembly.Outcome]
