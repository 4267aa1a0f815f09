"""OTLP spans into the ledger: buffer per (tenant, trace), assemble, record through ingestion.

A trace's spans may come in several requests and in any order. They wait in the buffer until
the trace's run can be recorded:

- its root span arrives (the root ends last; the trace is complete): the run is recorded from
  every span so far and closed in the same transaction;
- or the trace stays quiet for ``LEDGER_OTLP_QUIET_SECONDS`` without its root (a long run, or a
  root that lives in a service that does not export here): the beat task records the run as
  running. Later spans append to it; its root, or another quiet period, closes it.

Spans of a closed run are kept raw (state ``late``) and reported by a note on the run. Spans no
ledger record fits are chained on their run as notes carrying the whole span; a trace with no
GenAI or OpenInference span at all records no run, and its spans stay in the buffer, unmapped.
Records go in through ``ingest_batch``, so chains, idempotency and conflicts are the ledger's
own.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, TextField, Value, When
from django.db.models.functions import Cast
from django.utils import timezone

from core.metrics import count_spans
from core.models import Tenant

from ..annotations import annotate
from ..bulk import append_rows, build
from ..ingest import BatchForbidden, ingest_batch
from ..ingest_schema import AnnotationIn, BatchIn, RunIn
from ..models import (
    AnnotationKind,
    OtlpSpan,
    OtlpSpanState,
    OtlpTrace,
    OtlpTraceState,
    Run,
    RunStatus,
    Tool,
)
from . import assembly, deferral, logs
from .assembly import Assembled, TraceContext
from .wire import DecodedSpans, SpanDict

logger = logging.getLogger(__name__)


@dataclass
class ExportResult:
    accepted: int = 0
    rejected: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        return "; ".join(self.notes)


@dataclass
class _TraceWork:
    trace: OtlpTrace
    new: list[SpanDict]
    context: TraceContext = field(default_factory=TraceContext)
    pending_pks: list[int] = field(default_factory=list)
    #: span id -> buffer row of the spans this trace had pending before the request
    pending_rows: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, assembly.Outcome] = field(default_factory=dict)
    run: RunIn | None = None
    #: the trace row's fields as locked (``_trace_fields``): unchanged, it is not written
    stored: tuple[Any, ...] = ()


def receive_spans(tenant: Tenant, decoded: DecodedSpans, recorded_by: str = "",
                  now: datetime | None = None, for_agents: Collection[str] | None = None
                  ) -> ExportResult:
    """Buffer ``decoded``'s spans in ``tenant`` and record what can be recorded, atomically.
    ``for_agents``: the agents the sending key acts for (None: any); a trace's run is recorded
    only for them, now or when a quiet trace is recorded later."""
    now = now or timezone.now()
    result = ExportResult(rejected=len(decoded.rejected))
    if decoded.rejected:
        result.notes.append(f"{len(decoded.rejected)} span(s) rejected: "
                            + "; ".join(decoded.rejected[:5]))
    by_trace: dict[str, dict[str, SpanDict]] = {}
    for span in decoded.spans:
        by_trace.setdefault(span["trace_id"], {}).setdefault(span["span_id"], span)
    result.accepted = sum(len(spans) for spans in by_trace.values())
    if not by_trace:
        count_spans(rejected=result.rejected)
        return result

    with transaction.atomic():
        traces = _claim_traces(tenant, by_trace, now)
        logs.join_waiting_events(tenant, decoded.spans)  # GenAI events sent as logs first
        if for_agents is not None:
            _bind_traces(traces.values(), for_agents)
        # The children a root completes are read with the rest of the buffer: no second query.
        rooted = [t.pk for tid, t in traces.items() if t.state == OtlpTraceState.PENDING
                  and any(assembly.is_root(s) for s in by_trace[tid].values())]
        known, bodies = _buffered(traces, rooted)
        work: list[_TraceWork] = []
        for trace_id, spans in sorted(by_trace.items()):
            trace = traces[trace_id]
            seen = known.get(trace.pk, {})
            new = [s for sid, s in spans.items() if sid not in seen]
            if not new:
                continue  # a retried export: everything already buffered
            item = _TraceWork(trace, new, stored=_trace_fields(trace))
            for sid, (parent, record_kind, state, pk) in seen.items():
                item.context.parents[sid] = parent
                if record_kind:
                    item.context.record_kinds[sid] = record_kind
                    item.context.steps_recorded += record_kind == "step"
                if state == OtlpSpanState.PENDING:
                    item.pending_pks.append(pk)
                    item.pending_rows[sid] = pk
            trace.last_activity_at = now
            work.append(item)

        _plan(tenant, work, result, now, bodies)
        runs = [w.run for w in work if w.run is not None]
        if runs:
            ingest_batch(tenant, BatchIn(runs=runs), recorded_by=recorded_by,
                         for_agents=for_agents)
        deferred = _store(tenant, work, now)
        _report_late(tenant, work, recorded_by, result)
        result.notes += deferral.keep_unplaced(tenant, work, recorded_by)
    count_spans(result.accepted, result.rejected, deferred)
    return result


def assemble_idle_traces(now: datetime | None = None, limit: int = 500) -> dict[str, int]:
    """Beat task body: record quiet pending traces as running runs; close quiet open runs."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LEDGER_OTLP_QUIET_SECONDS)
    idle = list(OtlpTrace.objects.filter(
        state__in=[OtlpTraceState.PENDING, OtlpTraceState.OPEN], last_activity_at__lte=cutoff,
    ).order_by("last_activity_at").values_list("pk", flat=True)[:limit])
    done = {"recorded": 0, "closed": 0}
    for trace_pk in idle:
        outcome = advance_idle_trace(trace_pk, now)
        if outcome:
            done[outcome] += 1
    return done


def advance_idle_trace(trace_pk: int, now: datetime | None = None) -> str | None:
    """One quiet trace one step on: pending -> recorded (running), open -> closed."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.LEDGER_OTLP_QUIET_SECONDS)
    with transaction.atomic():
        trace = OtlpTrace.objects.select_for_update(of=("self",)).select_related(
            "tenant").filter(pk=trace_pk, last_activity_at__lte=cutoff).first()
        if trace is None or trace.state == OtlpTraceState.CLOSED:
            return None  # new spans came, or another worker did it
        tenant = trace.tenant
        joined = _headers_of(tenant, [trace]).get(trace.trace_id)
        if trace.state == OtlpTraceState.PENDING and joined is not None:
            return _join_quietly(trace, joined, now)
        if trace.state == OtlpTraceState.OPEN and joined and not _recorded_from_spans(joined):
            trace.state, trace.closed_at = OtlpTraceState.CLOSED, now  # its writer ends it
            trace.save()
            return "closed"
        if trace.state == OtlpTraceState.PENDING:
            rows = list(OtlpSpan.objects.filter(trace=trace, state=OtlpSpanState.PENDING)
                        .values_list("pk", "body"))
            item = _TraceWork(trace, [body for _, body in rows])
            _record(tenant, item, close=False, now=now,
                    tool_classes=_tool_classes(tenant, item.new))
            if item.run is not None and not _recorded_within_binding(trace, item.run):
                trace.state, trace.closed_at = OtlpTraceState.CLOSED, now
                trace.save()
                return "closed"
            _update_outcomes(trace, item.outcomes)
            trace.last_activity_at = now  # the close waits for another quiet period
            trace.save()
            deferral.keep_unplaced(tenant, [item], "ledger-portal")
            return "recorded" if trace.state == OtlpTraceState.OPEN else "closed"
        header = _headers_of(tenant, [trace])[trace.trace_id]
        run_span = _stored_span(trace, header["run_span_id"])
        latest_end = max((body["end_time_unix_nano"] for body in OtlpSpan.objects.filter(
            trace=trace).values_list("body", flat=True).iterator()), default=0)
        status, ended = assembly.run_end(header, run_span, None, latest_end)
        note = AnnotationIn(
            annotation_id=f"otel-{trace.trace_id}-closed", kind="note",
            body=f"Closed after {settings.LEDGER_OTLP_QUIET_SECONDS} s without spans; the "
            "trace's root span never arrived.",
            data={"status": status, "quiet_seconds": settings.LEDGER_OTLP_QUIET_SECONDS})
        ingest_batch(tenant, BatchIn(runs=[_run_in(header, Assembled(),
                                                     status, ended, [note])]),
                     recorded_by="ledger-portal")
        trace.state, trace.closed_at = OtlpTraceState.CLOSED, now
        trace.save()
        deferral.keep_quiet_close(trace, "ledger-portal")
        return "closed"


def _join_quietly(trace: OtlpTrace, header: dict[str, Any], now: datetime) -> str:
    """A quiet pending trace whose run the agent client recorded: its spans join that run
    (or, the run being over, stay raw as late spans)."""
    rows = list(OtlpSpan.objects.filter(trace=trace, state=OtlpSpanState.PENDING)
                .values_list("pk", "body"))
    item = _TraceWork(trace, [body for _, body in rows])
    trace.recorded_at = now
    if header["closed"]:
        trace.state, trace.closed_at = OtlpTraceState.CLOSED, now
        item.outcomes = {s["span_id"]: assembly.Outcome(OtlpSpanState.LATE) for s in item.new}
    else:
        trace.state = OtlpTraceState.OPEN
        _append(item, header, None, now, _tool_classes(trace.tenant, item.new))
        if item.run is not None:
            ingest_batch(trace.tenant, BatchIn(runs=[item.run]), recorded_by="ledger-portal",
                         for_agents=trace.for_agents)
    _update_outcomes(trace, item.outcomes)
    trace.last_activity_at = now
    trace.save()
    return "recorded" if trace.state == OtlpTraceState.OPEN else "closed"


def _recorded_within_binding(trace: OtlpTrace, run: Any) -> bool:
    """Record ``run`` of a quiet trace, or, when the keys that sent it were bound to other
    agents, refuse it (logged; the spans stay buffered as they came) and answer False."""
    try:
        ingest_batch(trace.tenant, BatchIn(runs=[run]), recorded_by="ledger-portal",
                     for_agents=trace.for_agents)
    except BatchForbidden as exc:
        logger.warning("OTLP trace %s of tenant %s not recorded: %s", trace.trace_id,
                       trace.tenant.slug, exc)
        return False
    return True


def _bind_traces(traces: Iterable[OtlpTrace], for_agents: Collection[str]) -> None:
    """Narrow each trace to the agents this key acts for too (spans from several keys: the
    agents all of them act for). One UPDATE per distinct binding, not per trace."""
    changed: dict[tuple[str, ...], list[int]] = {}
    for trace in traces:
        bound = sorted(set(for_agents) if trace.for_agents is None
                       else set(trace.for_agents) & set(for_agents))
        if bound != trace.for_agents:
            trace.for_agents = bound
            changed.setdefault(tuple(bound), []).append(trace.pk)
    for bound_agents, pks in changed.items():
        OtlpTrace.objects.filter(pk__in=pks).update(for_agents=list(bound_agents))


# -- planning ----------------------------------------------------------------------------------


def _claim_traces(tenant: Tenant, by_trace: dict[str, dict[str, SpanDict]], now: datetime
                  ) -> dict[str, OtlpTrace]:
    """The buffer rows of these traces, created if new, locked (in one order: no deadlocks)."""
    ids = sorted(by_trace)
    OtlpTrace.objects.bulk_create([
        OtlpTrace(tenant=tenant, trace_id=tid, run_id=assembly.run_id_for(tid),
                  first_received_at=now, last_activity_at=now) for tid in ids
    ], ignore_conflicts=True)
    return {t.trace_id: t for t in OtlpTrace.objects.select_for_update().filter(
        tenant=tenant, trace_id__in=ids).order_by("trace_id")}


def _known_spans(traces: dict[str, OtlpTrace]) -> dict[int, dict[str, tuple[str, str, str, int]]]:
    return _buffered(traces)[0]


def _buffered(traces: dict[str, OtlpTrace], bodies_of: Collection[int] = ()
              ) -> tuple[dict[int, dict[str, tuple[str, str, str, int]]], dict[int, SpanDict]]:
    """What the buffer holds of ``traces``: trace pk -> span id -> (parent, record kind, state,
    row pk); and row pk -> body of the pending spans of the traces ``bodies_of`` (pks)."""
    known: dict[int, dict[str, tuple[str, str, str, int]]] = {}
    bodies: dict[int, SpanDict] = {}
    if not traces:
        return known, bodies
    # As text, decoded by orjson: JSONField decodes with json.loads, half of reading them.
    body: Any = Value(None, output_field=TextField())
    if bodies_of:
        body = Case(When(trace__in=list(bodies_of), state=OtlpSpanState.PENDING,
                         then=Cast("body", TextField())), default=body)
    # By the traces' own key (tenant, trace id), joined: a list of trace pks, estimated by
    # the column's statistics, is a sequential scan of the whole buffer while they are
    # missing (a new or truncated table until autoanalyze: 25 ms at 45,000 spans, not 1.4).
    rows = OtlpSpan.objects.filter(
        trace__tenant_id=next(iter(traces.values())).tenant_id,
        trace__trace_id__in=list(traces)).values_list(
        "trace_id", "span_id", "parent_span_id", "record_kind", "state", "pk", body)
    for trace_pk, span_id, parent, record_kind, state, pk, text in rows:
        known.setdefault(trace_pk, {})[span_id] = (parent, record_kind, state, pk)
        if text is not None:
            bodies[pk] = orjson.loads(text)
    return known, bodies


def _plan(tenant: Tenant, work: list[_TraceWork], result: ExportResult, now: datetime,
          pending_bodies: dict[int, SpanDict]) -> None:
    """``pending_bodies``: row pk -> body of the buffered spans read already (the children
    of the traces whose root came); the others this plan assembles are read here."""
    # A pending trace's run may exist already: recorded by the agent client, which follows
    # the trace context (run id otel-<trace id>). Its spans then join that run as they come.
    headers = _headers_of(tenant, [w.trace for w in work
                                   if w.trace.state != OtlpTraceState.CLOSED])
    pending_bodies = {**pending_bodies, **_bodies([
        pk for w in work if w.trace.state == OtlpTraceState.PENDING
        and (w.trace.trace_id in headers or any(assembly.is_root(s) for s in w.new))
        for pk in w.pending_pks if pk not in pending_bodies])}
    # Spans buffered by earlier requests call tools too: their classes, as registered now.
    tool_classes = _tool_classes(tenant, [s for w in work for s in w.new]
                                 + list(pending_bodies.values()))
    run_spans = _stored_run_spans(work, headers)
    for item in work:
        trace = item.trace
        root = next((s for s in item.new if assembly.is_root(s)), None)
        if trace.state == OtlpTraceState.PENDING and trace.trace_id in headers:
            item.new = [pending_bodies[pk] for pk in item.pending_pks] + item.new
            trace.state, trace.recorded_at = OtlpTraceState.OPEN, now
        if trace.state == OtlpTraceState.OPEN and headers[trace.trace_id]["closed"]:
            trace.state, trace.closed_at = OtlpTraceState.CLOSED, now  # its writer ended it
        if trace.state == OtlpTraceState.CLOSED:
            item.outcomes = {s["span_id"]: assembly.Outcome(OtlpSpanState.LATE)
                             for s in item.new}
            where = (f"run {trace.run_id!r}, see the note on it" if trace.recorded_at else
                     "a trace recorded no run for (no GenAI spans)")
            result.notes.append(f"{len(item.new)} span(s) of trace {trace.trace_id} arrived "
                                f"after {where} closed; kept raw")
        elif trace.state == OtlpTraceState.OPEN:
            _append(item, headers[trace.trace_id], root, now, tool_classes,
                    run_spans.get(trace.pk))
        elif root is not None:
            earlier = [pending_bodies[pk] for pk in item.pending_pks]
            item.new = earlier + item.new
            _record(tenant, item, close=True, now=now, root=root, tool_classes=tool_classes)
            if trace.recorded_at is None:
                result.notes.append(f"trace {trace.trace_id} has no GenAI spans: no run "
                                    f"recorded, {len(item.new)} span(s) kept raw")
        else:
            item.outcomes = {s["span_id"]: assembly.Outcome(OtlpSpanState.PENDING)
                             for s in item.new}


def _record(tenant: Tenant, item: _TraceWork, close: bool, now: datetime,
            tool_classes: dict[str, str], root: SpanDict | None = None) -> None:
    """First recording of a trace's run from all of its spans so far."""
    trace, spans = item.trace, item.new
    if not assembly.has_genai(spans):
        item.outcomes = {s["span_id"]: assembly.Outcome(OtlpSpanState.UNMAPPED) for s in spans}
        trace.state, trace.closed_at = OtlpTraceState.CLOSED, now
        return
    header = assembly.run_header(trace.trace_id, spans)
    records = assembly.assemble(trace.trace_id, spans, header["run_span_id"], TraceContext(),
                                tool_classes)
    status, ended = "running", None
    if close:
        run_span = next((s for s in spans if s["span_id"] == header["run_span_id"]), None)
        status, ended = assembly.run_end(header, run_span, root, 0)
    item.run = _run_in(header, records, status, ended)
    item.outcomes = records.outcomes
    trace.recorded_at = now
    trace.state = OtlpTraceState.CLOSED if close else OtlpTraceState.OPEN
    if close:
        trace.closed_at = now


def _append(item: _TraceWork, header: dict[str, Any], root: SpanDict | None, now: datetime,
            tool_classes: dict[str, str], stored_run_span: SpanDict | None = None) -> None:
    """Append ``item``'s new spans to its trace's recorded run (``stored_run_span``: the run
    span from the buffer, when the caller fetched it with other traces')."""
    trace = item.trace
    records = assembly.assemble(trace.trace_id, item.new, header["run_span_id"], item.context,
                                tool_classes)
    status, ended = "running", None
    if root is not None:
        if _recorded_from_spans(header):  # a run the agent client records, it ends
            run_span = next((s for s in item.new if s["span_id"] == header["run_span_id"]),
                            None) or stored_run_span or _stored_span(
                                trace, header["run_span_id"])
            status, ended = assembly.run_end(header, run_span, root, 0)
        trace.state, trace.closed_at = OtlpTraceState.CLOSED, now
    item.run = _run_in(header, records, status, ended)
    item.outcomes = records.outcomes


def _run_in(header: dict[str, Any], records: Assembled, status: str, ended: datetime | None,
            extra_notes: Iterable[AnnotationIn] = ()) -> RunIn:
    return RunIn(
        run_id=header["run_id"], agent_id=header["agent_id"], agent_name=header["agent_name"],
        goal=header["goal"], trigger_ref=header["trigger_ref"], started_at=header["started_at"],
        metadata=header["metadata"], status=RunStatus(status), ended_at=ended,
        steps=records.steps, model_calls=records.model_calls, tool_calls=records.tool_calls,
        annotations=[AnnotationIn.model_validate(a) for a in records.annotations]
        + list(extra_notes))


def _recorded_from_spans(header: dict[str, Any]) -> bool:
    return bool(header["metadata"].get("source") == "opentelemetry")


def _headers_of(tenant: Tenant, traces: list[OtlpTrace]) -> dict[str, dict[str, Any]]:
    """The identity of the runs already recorded for ``traces``: appended batches repeat it."""
    if not traces:
        return {}
    by_run_id = {t.run_id: t.trace_id for t in traces}
    return {by_run_id[run.run_id]: {
        "run_id": run.run_id, "agent_id": run.agent.agent_id, "agent_name": run.agent.name,
        "goal": run.goal, "trigger_ref": run.trigger_ref, "started_at": run.started_at.isoformat(),
        "metadata": run.metadata, "run_span_id": run.metadata.get("run_span_id", ""),
        "closed": run.is_closed,
    } for run in Run.objects.filter(tenant=tenant, run_id__in=list(by_run_id)).select_related(
        "agent")}


def _tool_classes(tenant: Tenant, spans: list[SpanDict]) -> dict[str, str]:
    names = assembly.tool_names(spans)
    if not names:
        return {}
    return dict(Tool.objects.filter(tenant=tenant, name__in=names).values_list(
        "name", "action_class"))


def _bodies(pks: list[int]) -> dict[int, SpanDict]:
    if not pks:
        return {}
    return {pk: orjson.loads(text) for pk, text in OtlpSpan.objects.filter(
        pk__in=pks).values_list("pk", Cast("body", TextField()))}


def _stored_run_spans(work: list[_TraceWork], headers: dict[str, dict[str, Any]]
                      ) -> dict[int, SpanDict]:
    """Trace pk -> its run span from the buffer, for the recorded traces whose root arrives
    now without their run span (``_append`` ends the run from it): one query for them all."""
    wanted: dict[int, str] = {}
    for item in work:
        header = headers.get(item.trace.trace_id)
        if (header is None or not header["run_span_id"] or not _recorded_from_spans(header)
                or not any(assembly.is_root(s) for s in item.new)):
            continue
        if all(s["span_id"] != header["run_span_id"] for s in item.new):
            wanted[item.trace.pk] = header["run_span_id"]
    if not wanted:
        return {}
    rows = OtlpSpan.objects.filter(trace__in=list(wanted), span_id__in=set(wanted.values())
                                   ).values_list("trace_id", "span_id", "body")
    return {trace_pk: body for trace_pk, span_id, body in rows if wanted[trace_pk] == span_id}


def _stored_span(trace: OtlpTrace, span_id: str) -> SpanDict | None:
    if not span_id:
        return None
    body = OtlpSpan.objects.filter(trace=trace, span_id=span_id).values_list(
        "body", flat=True).first()
    return body


# -- storing -----------------------------------------------------------------------------------


def _store(tenant: Tenant, work: list[_TraceWork], now: datetime) -> int:
    """Keep the new spans and the traces' states; the number of spans left pending.
    Set-based: one INSERT for the new spans, one UPDATE per outcome kind for the spans
    buffered before and assembled now, one UPDATE per kind of trace change, whatever the
    number of traces (a split trace's root request completes many at once)."""
    rows: list[OtlpSpan] = []
    earlier_outcomes: dict[tuple[str, str], list[int]] = {}
    for item in work:
        earlier: Collection[str] = ()
        if item.pending_rows and item.trace.state != OtlpTraceState.PENDING:
            # Pending spans assembled now were merged into item.new; they are updated, not new.
            earlier = item.pending_rows
            for span_id, pk in item.pending_rows.items():
                outcome = item.outcomes.get(span_id)
                if outcome is not None:
                    earlier_outcomes.setdefault((outcome.state, outcome.record_kind),
                                                []).append(pk)
        for span in item.new:
            if span["span_id"] in earlier:
                continue
            outcome = item.outcomes.get(span["span_id"]) or assembly.Outcome(
                OtlpSpanState.PENDING)
            rows.append(build(
                OtlpSpan, tenant=tenant, trace=item.trace, span_id=span["span_id"],
                parent_span_id=span["parent_span_id"], name=span["name"][:500],
                state=outcome.state, record_kind=outcome.record_kind, body=span,
                received_at=now))
    _mark_earlier(tenant, earlier_outcomes)
    append_rows(OtlpSpan, rows)
    # Most traces of a request change alike (new and closed at once): one UPDATE per kind;
    # none for a trace this request created and left as it was created (pending).
    changes: dict[tuple[Any, ...], list[int]] = {}
    for item in work:
        fields = _trace_fields(item.trace)
        if fields != item.stored:
            changes.setdefault(fields, []).append(item.trace.pk)
    for (state, recorded_at, closed_at, last_activity_at), pks in changes.items():
        OtlpTrace.objects.filter(pk__in=pks).update(
            state=state, recorded_at=recorded_at, closed_at=closed_at,
            last_activity_at=last_activity_at)
    return sum(row.state == OtlpSpanState.PENDING for row in rows)


def _trace_fields(trace: OtlpTrace) -> tuple[Any, ...]:
    """The fields of a trace's row ``_store`` writes, in its UPDATE's order."""
    return trace.state, trace.recorded_at, trace.closed_at, trace.last_activity_at


def _mark_earlier(tenant: Tenant, outcomes: dict[tuple[str, str], list[int]]) -> None:
    """Give buffered spans assembled now their outcome ((state, record kind) -> row pks).
    The traces are locked (``_claim_traces``): these rows are still pending."""
    if connection.vendor != "postgresql" or len(outcomes) < 2:
        for (state, record_kind), pks in outcomes.items():
            OtlpSpan.objects.filter(pk__in=pks, state=OtlpSpanState.PENDING).update(
                state=state, record_kind=record_kind)
        return
    # The children a request's roots complete take a few outcomes (model call, tool call,
    # kept raw...): one statement for them all, the pks as one array, not one per outcome.
    pks, states, kinds = [], [], []
    for (state, record_kind), group in outcomes.items():
        pks += group
        states += [state] * len(group)
        kinds += [record_kind] * len(group)
    table = connection.ops.quote_name(OtlpSpan._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS s SET state = v.state, record_kind = v.kind "  # noqa: S608
            "FROM unnest(%s::bigint[], %s::text[], %s::text[]) AS v(id, state, kind) "
            "WHERE s.tenant_id = %s AND s.id = v.id AND s.state = %s",
            [pks, states, kinds, tenant.pk, OtlpSpanState.PENDING])


def _update_outcomes(trace: OtlpTrace, outcomes: dict[str, assembly.Outcome]) -> set[str]:
    """Write the outcome of spans already in the buffer; return their span ids."""
    stored = OtlpSpan.objects.filter(trace=trace, state=OtlpSpanState.PENDING)
    pending = set(stored.values_list("span_id", flat=True))
    groups: dict[tuple[str, str], list[str]] = {}
    for span_id, outcome in outcomes.items():
        if span_id in pending:
            groups.setdefault((outcome.state, outcome.record_kind), []).append(span_id)
    for (state, record_kind), span_ids in groups.items():
        stored.filter(span_id__in=span_ids).update(state=state, record_kind=record_kind)
    return pending


def _report_late(tenant: Tenant, work: list[_TraceWork], recorded_by: str,
                 result: ExportResult) -> None:
    for item in work:
        late = [s for s in item.new
                if item.outcomes.get(s["span_id"], None) is not None
                and item.outcomes[s["span_id"]].state == OtlpSpanState.LATE]
        if not late or item.trace.recorded_at is None:
            continue
        annotate(tenant, AnnotationKind.NOTE,
                 f"{len(late)} OpenTelemetry span(s) arrived after this run closed; kept raw "
                 "in the span buffer, not recorded.",
                 run_id=item.trace.run_id, by=recorded_by or None,
                 data={"late_spans": [{"span_id": s["span_id"], "name": s["name"],
                                       "parent_span_id": s["parent_span_id"]} for s in late]})
