"""From the spans of one trace to the records of one run, in the ingestion format.

No database here: the service hands in the spans, what became of the trace's earlier spans and
the tenant's tool classes, and gets back a run (header, records, end) plus the outcome of every
span. External ids are derived from the trace and span ids, so assembling the same spans twice
gives the same records (ingestion's idempotency does the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from ..ingest_schema import AnnotationIn, ModelCallIn, StepIn, ToolCallIn, validation_errors
from ..models import OtlpSpanState
from . import genai, openinference
from .genai import Kind, as_ledger_id
from .wire import SpanDict

#: the class a tool the tenant's registry does not know is recorded with: the strictest
UNREGISTERED_TOOL_CLASS = "exfil"


def run_id_for(trace_id: str) -> str:
    return f"otel-{trace_id}"


def call_id_for(trace_id: str, span_id: str) -> str:
    return f"otel-{trace_id}-{span_id}"


def step_id_for(span_id: str) -> str:
    return f"otel-{span_id}"


def is_root(span: SpanDict) -> bool:
    return not span["parent_span_id"]


def convention_of(span: SpanDict) -> ModuleType:
    """The module that reads ``span``: OpenInference's when it says its kind, else GenAI's."""
    return openinference if openinference.is_openinference(span) else genai


def kind_of(span: SpanDict) -> str:
    kind: str = convention_of(span).kind_of(span)
    return kind


def has_genai(spans: list[SpanDict]) -> bool:
    """Whether a trace has a span of an agent convention (GenAI or OpenInference)."""
    return any(kind_of(s) != Kind.NOT_GENAI for s in spans)


def tool_names(spans: list[SpanDict]) -> set[str]:
    """The tools the spans call, as the ledger names them (for the registry's classes)."""
    return {convention_of(s).tool_name(s) for s in spans
            if kind_of(s) in (Kind.TOOL_CALL, Kind.MCP_TOOL_CALL)}


@dataclass
class Outcome:
    state: str
    record_kind: str = ""
    #: why a span was kept raw; ``deferred``: whether it waits for reconciliation (not when
    #: another span's record already says what it says)
    reason: str = ""
    deferred: bool = False


@dataclass
class TraceContext:
    """What is known of a trace's spans recorded before: parents and the records they became."""

    parents: dict[str, str] = field(default_factory=dict)
    record_kinds: dict[str, str] = field(default_factory=dict)
    steps_recorded: int = 0


@dataclass
class Assembled:
    steps: list[StepIn] = field(default_factory=list)
    model_calls: list[ModelCallIn] = field(default_factory=list)
    tool_calls: list[ToolCallIn] = field(default_factory=list)
    annotations: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)


def choose_run_span(spans: list[SpanDict]) -> SpanDict | None:
    """The outermost agent or workflow span: nested agents become steps of its run."""
    return next(iter(_run_spans(spans)), None)


def _run_spans(spans: list[SpanDict]) -> list[SpanDict]:
    """The agent and workflow spans, outermost first."""
    by_id = {s["span_id"]: s for s in spans}

    def depth(span: SpanDict) -> int:
        n, seen, parent = 0, set(), span["parent_span_id"]
        while parent in by_id and parent not in seen:
            seen.add(parent)
            n += 1
            parent = by_id[parent]["parent_span_id"]
        return n

    return sorted((s for s in spans if kind_of(s) == Kind.RUN),
                  key=lambda s: (depth(s), s["start_time_unix_nano"]))


def _first_attribute(spans: list[SpanDict], name: str) -> str:
    return str(next((s["attributes"][name] for s in spans if s["attributes"].get(name)), ""))


def run_header(trace_id: str, spans: list[SpanDict]) -> dict[str, Any]:
    """The run's identity fields, fixed when it is first recorded (later batches repeat them)."""
    run_spans = _run_spans(spans)
    run_span = run_spans[0] if run_spans else None
    earliest = min(spans, key=lambda s: s["start_time_unix_nano"] or 2**63)
    # A run span naming no agent (the Agents SDK's "Agent workflow") takes the first agent
    # named below it; then an agent span's own name; none: the service that sent the trace.
    named = [convention_of(s).agent_of(s) for s in run_spans] + [
        convention_of(s).agent_named_by(s) for s in run_spans]
    agent_id, agent_name = next((n for n in named if n), genai.service_agent(earliest))
    started = genai.started(run_span or earliest) or genai.ended(run_span or earliest)
    in_order = ([run_span] if run_span else []) + spans
    conversation = _first_attribute(in_order, "gen_ai.conversation.id")
    session = _first_attribute(in_order, "session.id")
    user = _first_attribute(in_order, "user.id")
    metadata = genai.run_metadata(run_span, earliest)  # names the run span: appends need it
    goal = ""
    if run_span is not None:
        reader = convention_of(run_span)
        if reader is openinference:
            metadata.update(openinference.run_metadata(run_span))
        goal = reader.goal_of(run_span)
    for key, value in (("conversation_id", conversation), ("session_id", session),
                       ("user_id", user)):
        if value:
            metadata.setdefault(key, value)
    return {"run_id": run_id_for(trace_id), "agent_id": agent_id, "agent_name": agent_name,
            "goal": goal, "trigger_ref": as_ledger_id(conversation or session or user),
            "started_at": started.isoformat() if started else None,
            "metadata": metadata,
            "run_span_id": run_span["span_id"] if run_span else ""}


def run_end(header: dict[str, Any], run_span: SpanDict | None, root: SpanDict | None,
            latest_end_unix_nano: int) -> tuple[str, datetime | None]:
    """How the run ended: its run span's outcome, else its root's; neither: cancelled (the
    trace went quiet without reporting an end)."""
    basis = run_span or root
    if basis is not None:
        status = "failed" if genai.failed(basis) else "succeeded"
        end = genai.ended(basis)
    else:
        status, end = "cancelled", genai.timestamp(latest_end_unix_nano)
    started = datetime.fromisoformat(header["started_at"])
    if end is None or end < started:
        end = started
    return status, end


def assemble(trace_id: str, spans: list[SpanDict], run_span_id: str, context: TraceContext,
             tool_classes: dict[str, str]) -> Assembled:
    """The records ``spans`` (new to the run) become, and each span's outcome."""
    out = Assembled()
    kinds = {s["span_id"]: kind_of(s) for s in spans}
    by_id = {s["span_id"]: s for s in spans}
    parents = {**context.parents, **{s["span_id"]: s["parent_span_id"] for s in spans}}
    record_kinds = dict(context.record_kinds)
    step_count = context.steps_recorded
    ordered = sorted(spans, key=lambda s: s["start_time_unix_nano"])

    # Steps first, so calls under a nested agent can name their step.
    for span in ordered:
        sid = span["span_id"]
        if sid == run_span_id:
            out.outcomes[sid] = Outcome(OtlpSpanState.RECORDED, "run")
            record_kinds[sid] = "run"
            _note_run_end(out, trace_id, span)
        elif kinds[sid] == Kind.RUN:
            try:
                out.steps.append(StepIn.model_validate(
                    convention_of(span).step(span, step_id_for(sid), step_count)))
            except ValidationError as exc:
                _keep_raw(out, trace_id, span, _invalid(exc))
                continue
            step_count += 1
            out.outcomes[sid] = Outcome(OtlpSpanState.RECORDED, "step")
            record_kinds[sid] = "step"

    def step_of(span_id: str) -> str | None:
        seen: set[str] = set()
        parent = parents.get(span_id, "")
        while parent and parent not in seen:
            seen.add(parent)
            if record_kinds.get(parent) == "step":
                return step_id_for(parent)
            parent = parents.get(parent, "")
        return None

    for span in ordered:
        sid, kind = span["span_id"], kinds[span["span_id"]]
        if sid in out.outcomes:
            continue
        call_id = call_id_for(trace_id, sid)
        reader = convention_of(span)
        try:
            if kind in (Kind.MODEL_CALL, Kind.TOOL_CALL) and _seen_by_both(span, by_id, kinds):
                _keep_raw(out, trace_id, span, "the same call as its parent span, seen by a "
                          "second instrumentation of the other convention, which records it",
                          deferred=False)
            elif kind == Kind.MODEL_CALL:
                out.model_calls.append(ModelCallIn.model_validate(
                    reader.model_call(span, call_id, step_of(sid))))
                out.outcomes[sid] = Outcome(OtlpSpanState.RECORDED, "model_call")
            elif kind == Kind.TOOL_CALL or (
                    kind == Kind.MCP_TOOL_CALL and not _under_execute_tool(span, kinds,
                                                                           record_kinds)):
                name = reader.tool_name(span)
                registered = tool_classes.get(name)
                out.tool_calls.append(ToolCallIn.model_validate(reader.tool_call(
                    span, call_id, step_of(sid), registered or UNREGISTERED_TOOL_CLASS)))
                out.outcomes[sid] = Outcome(OtlpSpanState.RECORDED, "tool_call")
                if registered is None:
                    _flag_unregistered(out, call_id, name)
            elif kind == Kind.MCP_TOOL_CALL:
                _keep_raw(out, trace_id, span, "the MCP client call inside an execute_tool "
                          "span, which records this tool call", deferred=False)
            elif kind == Kind.LABELLED_NOTE:
                out.annotations.append(AnnotationIn.model_validate(
                    openinference.note(span, call_id)).model_dump())
                out.outcomes[sid] = Outcome(OtlpSpanState.RECORDED, "annotation")
            elif kind == Kind.RUN:
                continue  # a step, done above (or kept raw)
            else:
                _keep_raw(out, trace_id, span, _why_unmapped(span, kind),
                          deferred=not _is_mcp_server_side(span))
        except ValidationError as exc:
            _keep_raw(out, trace_id, span, _invalid(exc))
    return out


def _note_run_end(out: Assembled, trace_id: str, span: SpanDict) -> None:
    """What the run span says of the run's end: its output, and why it failed (the status
    message, ``error.type``, the exception event), as a note chained on the run."""
    output = convention_of(span).output_of(span)
    error = genai.error_of(span)
    if output is None and error is None:
        return
    body = "Run output" if error is None else "Run failed: " + ": ".join(
        str(error[k]) for k in ("type", "message") if error.get(k))
    data = {k: v for k, v in {"label": "run_end", "output": output, "error": error}.items()
            if v is not None}
    out.annotations.append({"annotation_id": f"{call_id_for(trace_id, span['span_id'])}-end",
                            "kind": "note", "body": body[:20_000], "data": data})


def _flag_unregistered(out: Assembled, call_id: str, tool: str) -> None:
    out.annotations.append({
        "annotation_id": f"{call_id}-unregistered", "kind": "note",
        "target_call_id": call_id,
        "body": f"Tool {tool!r} is not in the tool registry: recorded as "
                f"{UNREGISTERED_TOOL_CLASS}, the strictest class, until it is registered.",
        "data": {"label": "unregistered_tool", "tool": tool,
                 "action_class": UNREGISTERED_TOOL_CLASS},
    })


def _seen_by_both(span: SpanDict, by_id: dict[str, SpanDict], kinds: dict[str, str]) -> bool:
    """A call span directly inside a call span of the same kind but the other convention: two
    instrumentations (OpenInference's and OpenTelemetry's) wrapped the same client call."""
    parent = by_id.get(span["parent_span_id"])
    return (parent is not None and kinds[parent["span_id"]] == kinds[span["span_id"]]
            and convention_of(parent) is not convention_of(span))


def _why_unmapped(span: SpanDict, kind: str) -> str:
    if kind == Kind.NOT_GENAI:
        return "not a GenAI span; no ledger record fits it"
    attrs = span["attributes"]
    operation = attrs.get("gen_ai.operation.name") or attrs.get("mcp.method.name")
    if operation == genai.MCP_TOOL_CALL:
        return "the server side of an MCP tool call (the client side records it)"
    return f"GenAI operation {operation or '(none)'!r} has no ledger record"


def _is_mcp_server_side(span: SpanDict) -> bool:
    """The server's half of an MCP tool call: the client's span records the call."""
    attrs = span["attributes"]
    operation = attrs.get("gen_ai.operation.name") or attrs.get("mcp.method.name")
    return bool(operation == genai.MCP_TOOL_CALL)


def _under_execute_tool(span: SpanDict, kinds: dict[str, str], record_kinds: dict[str, str]
                        ) -> bool:
    parent = span["parent_span_id"]
    return kinds.get(parent) == Kind.TOOL_CALL or record_kinds.get(parent) == "tool_call"


def _invalid(exc: ValidationError) -> str:
    return "not a valid ledger record: " + "; ".join(
        f"{e['path']}: {e['message']}" for e in validation_errors(exc)[:5])


def _keep_raw(out: Assembled, trace_id: str, span: SpanDict, reason: str,
              deferred: bool = True) -> None:
    """An unmapped span is chained on its run as a note carrying the whole span (and, unless
    another record says what it says, deferred for reconciliation: runs/otlp/deferral.py)."""
    out.annotations.append({
        "annotation_id": call_id_for(trace_id, span["span_id"]),
        "kind": "note",
        "body": f"OpenTelemetry span {span['name'][:200]!r} kept raw: {reason}"[:20_000],
        "data": {"otel_span": span, "reason": reason},
    })
    out.outcomes[span["span_id"]] = Outcome(OtlpSpanState.UNMAPPED, "annotation", reason,
                                            deferred)
