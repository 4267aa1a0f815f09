"""OpenTelemetry GenAI spans through ``POST /v1/traces``, beside the ledger's own batch endpoint
with the same content, in the same run.

    .venv/bin/python -m bench.otlp                         # 5,000 agent traces, 45,000 spans
    .venv/bin/python -m bench.otlp --traces 2000 --clients 2

Target: >= 3,000 spans/s through the OTLP endpoint into PostgreSQL, on 2 cores, gunicorn with 2
sync workers (as ``bench.ingest``).

Each trace is one agent run as GenAI instrumentation emits it: an ``invoke_agent`` root span
with 3 ``chat`` spans (captured input/output messages, token usage) and 5 ``execute_tool``
spans (arguments and results; one in five fails), 9 spans a trace. Spans are packed into export
requests the way the SDK's BatchSpanProcessor does (<= ``--spans-per-request``, default 504,
children before their root), serialized to protobuf up front. The batch endpoint gets the
records those same spans become (the receiver's own assembly, run offline), as JSON batches of
the same traces, also serialized up front.

Phases, the ledger and span buffer emptied (TRUNCATE + CHECKPOINT) before each:

1. ``otlp xN``: N client threads POST the protobuf bodies to ``/v1/traces``
   (``Content-Type: application/x-protobuf``, ``Authorization: Bearer <ingest key>``); each
   answer must be 200 with no partial success; afterwards every trace must be a closed run
   with its 8 calls.
2. ``otlp-openinference xN``: the same agent runs as OpenInference instrumentations emit them
   (an ``AGENT`` root, 3 ``LLM`` spans with flattened ``llm.input_messages.*`` /
   ``llm.output_messages.*``, 5 ``TOOL`` spans), same checks. Target: within 20% of the GenAI
   spans/s.
3. ``batches xN``: the same, JSON batches to ``/api/v1/batches/``; each answer must be 201.

The tenant's registry knows the five tools (an unregistered tool would add a note per call).
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench._common import add_db_arguments, bench_database, environment_line, table, verdict

TARGET_SPANS_PER_S = 3000
TARGET_OPENINFERENCE_RATIO = 0.8
SPANS_PER_TRACE = 9
T0 = 1_790_000_000_000_000_000
MS = 1_000_000
TOOLS = ["get_customer", "search_tickets", "update_ticket", "send_email", "get_metrics"]


@dataclass
class Body:
    data: bytes
    spans: int


@dataclass
class Phase:
    name: str
    seconds: float
    spans: int
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def spans_per_s(self) -> float:
        return self.spans / self.seconds


# -- data ------------------------------------------------------------------------------------


def attributes(values: dict[str, Any]) -> list[Any]:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    def value(v: Any) -> Any:
        if isinstance(v, int):
            return AnyValue(int_value=v)
        if isinstance(v, list):
            out = AnyValue()
            out.array_value.values.extend(value(x) for x in v)
            return out
        return AnyValue(string_value=str(v))

    return [KeyValue(key=k, value=value(v)) for k, v in values.items()]


def agent_trace(rng: random.Random, n: int) -> list[Any]:
    """One agent run's spans, children first (the order they end in)."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    trace_id = rng.getrandbits(128).to_bytes(16, "big")
    start = T0 + n * 5_000 * MS

    def make(name: str, attrs: dict[str, Any], begin: int, end: int, parent: bytes = b"",
             error: str = "", kind: int = Span.SPAN_KIND_INTERNAL) -> Any:
        span = Span(trace_id=trace_id, span_id=rng.getrandbits(64).to_bytes(8, "big"),
                    parent_span_id=parent, name=name, kind=kind,  # type: ignore[arg-type]
                    start_time_unix_nano=start + begin * MS, end_time_unix_nano=start + end * MS)
        span.attributes.extend(attributes(attrs))
        if error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
        return span

    root = make("invoke_agent support-triage", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "support-triage",
        "gen_ai.agent.id": "support-triage", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4.1", "gen_ai.conversation.id": f"conv-{n}"}, 0, 4000)
    pid = root.span_id
    children = []
    clock = 10
    for step in range(3):
        children.append(make("chat gpt-4.1", {
            "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
            "gen_ai.request.model": "gpt-4.1", "gen_ai.response.model": "gpt-4.1-2025-04-14",
            "gen_ai.usage.input_tokens": rng.randint(300, 3000),
            "gen_ai.usage.output_tokens": rng.randint(20, 400),
            "gen_ai.response.finish_reasons": ["tool_calls"],
            "gen_ai.input.messages": json.dumps([
                {"role": "user", "parts": [{"type": "text", "content":
                 f"Ticket T-{n}: customer {rng.randint(1, 99999)} asks for a refund of order "
                 f"{rng.randint(1, 10**6)}; step {step}: decide the next action."}]}]),
            "gen_ai.output.messages": json.dumps([
                {"role": "assistant", "parts": [{"type": "tool_call", "id": f"call_{n}_{step}",
                                                 "name": TOOLS[step], "arguments":
                                                 {"ticket": f"T-{n}"}}],
                 "finish_reason": "tool_calls"}]),
        }, clock, clock + 600, pid, kind=Span.SPAN_KIND_CLIENT))
        clock += 610
    for i, tool in enumerate(TOOLS):
        fails = i == 3 and n % 5 == 0
        children.append(make(f"execute_tool {tool}", {
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": f"call_{n}_{i}",
            "gen_ai.tool.call.arguments": json.dumps({"ticket": f"T-{n}", "limit": 10}),
            **({"error.type": "TimeoutError"} if fails else {
                "gen_ai.tool.call.result": json.dumps({"ok": True, "rows": rng.randint(0, 50)})}),
        }, clock, clock + 120, pid, error="upstream did not answer" if fails else ""))
        clock += 130
    return [*children, root]


def openinference_trace(rng: random.Random, n: int) -> list[Any]:
    """The same agent run as OpenInference instrumentations emit it, children first."""
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    trace_id = rng.getrandbits(128).to_bytes(16, "big")
    start = T0 + n * 5_000 * MS

    def make(name: str, attrs: dict[str, Any], begin: int, end: int, parent: bytes = b"",
             error: str = "") -> Any:
        span = Span(trace_id=trace_id, span_id=rng.getrandbits(64).to_bytes(8, "big"),
                    parent_span_id=parent, name=name, kind=Span.SPAN_KIND_INTERNAL,
                    start_time_unix_nano=start + begin * MS, end_time_unix_nano=start + end * MS)
        span.attributes.extend(attributes(attrs))
        if error:
            span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=error))
        return span

    root = make("support-triage", {
        "openinference.span.kind": "AGENT", "agent.name": "support-triage",
        "session.id": f"conv-{n}", "input.value": f"Ticket T-{n}: decide the next actions",
        "output.value": "done"}, 0, 4000)
    pid = root.span_id
    children = []
    clock = 10
    for step in range(3):
        at = "llm.output_messages.0.message.tool_calls.0.tool_call"
        children.append(make("ChatCompletion", {
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4.1-2025-04-14",
            "llm.provider": "openai", "llm.system": "openai",
            "llm.token_count.prompt": rng.randint(300, 3000),
            "llm.token_count.completion": rng.randint(20, 400),
            "llm.invocation_parameters": json.dumps({"model": "gpt-4.1", "temperature": 0.2}),
            "llm.input_messages.0.message.role": "user",
            "llm.input_messages.0.message.content":
                f"Ticket T-{n}: customer {rng.randint(1, 99999)} asks for a refund of order "
                f"{rng.randint(1, 10**6)}; step {step}: decide the next action.",
            "llm.output_messages.0.message.role": "assistant",
            f"{at}.id": f"call_{n}_{step}", f"{at}.function.name": TOOLS[step],
            f"{at}.function.arguments": json.dumps({"ticket": f"T-{n}"}),
        }, clock, clock + 600, pid))
        clock += 610
    for i, tool in enumerate(TOOLS):
        fails = i == 3 and n % 5 == 0
        children.append(make(tool, {
            "openinference.span.kind": "TOOL", "tool.name": tool, "tool_call.id": f"call_{n}_{i}",
            "input.value": json.dumps({"ticket": f"T-{n}", "limit": 10}),
            **({"error.type": "TimeoutError"} if fails else {
                "output.value": json.dumps({"ok": True, "rows": rng.randint(0, 50)})}),
        }, clock, clock + 120, pid, error="upstream did not answer" if fails else ""))
        clock += 130
    return [*children, root]


def make_openinference_bodies(traces: int, spans_per_request: int, seed: int) -> list[Body]:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    rng = random.Random(seed)
    per_request = max(1, spans_per_request // SPANS_PER_TRACE)
    bodies = []
    for first in range(0, traces, per_request):
        spans = [s for n in range(first, min(traces, first + per_request))
                 for s in openinference_trace(rng, n)]
        resource = ResourceSpans()
        resource.resource.attributes.extend(attributes({"service.name": "support-bot"}))
        resource.scope_spans.append(ScopeSpans(spans=spans))
        resource.scope_spans[0].scope.name = "bench.otlp"
        request = ExportTraceServiceRequest(resource_spans=[resource])
        bodies.append(Body(request.SerializeToString(), len(spans)))
    return bodies


def make_bodies(traces: int, spans_per_request: int, seed: int) -> tuple[list[Body], list[Body]]:
    """(protobuf export requests, JSON ledger batches of the same traces)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    from runs.ingest_schema import BatchIn
    from runs.otlp import assembly, wire

    rng = random.Random(seed)
    per_request = max(1, spans_per_request // SPANS_PER_TRACE)
    otlp, batches = [], []
    for first in range(0, traces, per_request):
        spans = [s for n in range(first, min(traces, first + per_request))
                 for s in agent_trace(rng, n)]
        resource = ResourceSpans()
        resource.resource.attributes.extend(attributes({"service.name": "support-bot"}))
        resource.scope_spans.append(ScopeSpans(spans=spans))
        resource.scope_spans[0].scope.name = "bench.otlp"
        request = ExportTraceServiceRequest(resource_spans=[resource])
        otlp.append(Body(request.SerializeToString(), len(spans)))

        decoded = wire.spans_of(request)
        by_trace: dict[str, list[dict[str, Any]]] = {}
        for span in decoded.spans:
            by_trace.setdefault(span["trace_id"], []).append(span)
        runs = []
        for trace_id, trace_spans in by_trace.items():
            header = assembly.run_header(trace_id, trace_spans)
            records = assembly.assemble(trace_id, trace_spans, header["run_span_id"],
                                        assembly.TraceContext(),
                                        dict.fromkeys(TOOLS, "read"))
            run_span = next(s for s in trace_spans if s["span_id"] == header["run_span_id"])
            status, ended = assembly.run_end(header, run_span, run_span, 0)
            runs.append({
                "run_id": header["run_id"], "agent_id": header["agent_id"],
                "agent_name": header["agent_name"], "trigger_ref": header["trigger_ref"],
                "started_at": header["started_at"], "metadata": header["metadata"],
                "status": status, "ended_at": ended,
                "model_calls": records.model_calls, "tool_calls": records.tool_calls})
        batch = BatchIn.model_validate({"runs": runs})
        batches.append(Body(orjson.dumps(batch.model_dump(mode="json", exclude_defaults=True)),
                            len(spans)))
    return otlp, batches


# -- HTTP ------------------------------------------------------------------------------------


def post_all(port: int, key: str, bodies: list[Body], clients: int, path: str,
             content_type: str, ok: tuple[int, ...]) -> tuple[float, list[float]]:
    work: queue.Queue[int] = queue.Queue()
    for i in range(len(bodies)):
        work.put(i)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(conn: http.client.HTTPConnection) -> None:
        mine = []
        while not errors:
            try:
                i = work.get_nowait()
            except queue.Empty:
                break
            started = time.perf_counter()
            conn.request("POST", path, body=bodies[i].data, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            mine.append((time.perf_counter() - started) * 1000)
            if resp.status not in ok or (path == "/v1/traces" and answer):
                errors.append(f"request {i}: HTTP {resp.status} {answer[:500]!r}")
                break
        with lock:
            latencies.extend(mine)

    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=300) for _ in range(clients)]
    for conn in conns:  # imports, DB connection, key lookup: paid before timing
        for _ in range(3):
            conn.request("GET", "/api/v1/tenants/", headers=headers)
            conn.getresponse().read()
    threads = [threading.Thread(target=client, args=(c,)) for c in conns]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    if errors:
        sys.exit(f"{path} refused a request: {errors[0]}")
    return elapsed, latencies


def register_tools(tenant: Any) -> None:
    from runs.governance_log import setting_up
    from runs.models import Tool

    with setting_up():
        Tool.objects.bulk_create([Tool(tenant=tenant, name=name, action_class="read")
                                  for name in TOOLS], ignore_conflicts=True)


def reset() -> None:
    from django.db import connection, transaction

    from bench.ingest import LEDGER_TABLES

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)}, runs_otlpspan, runs_otlptrace "
                       "CASCADE")
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


def check_stored(tenant: Any, traces: int) -> None:
    from runs.annotations import GOVERNANCE_RUN_ID
    from runs.models import ModelCall, Run, ToolCall

    # Issuing the ingest key records it on the tenant's governance log, a run of its own.
    runs = Run.objects.filter(tenant=tenant).exclude(run_id=GOVERNANCE_RUN_ID)
    closed = runs.exclude(status="running").count()
    calls = (ModelCall.objects.filter(tenant=tenant).count()
             + ToolCall.objects.filter(tenant=tenant).count())
    if (runs.count(), closed, calls) != (traces, traces, traces * 8):
        sys.exit(f"stored {runs.count()} runs ({closed} closed), {calls} calls; expected "
                 f"{traces} closed runs with {traces * 8} calls")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=5000)
    parser.add_argument("--spans-per-request", type=int, default=504)
    parser.add_argument("--clients", default="1,2")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    add_db_arguments(parser, "otlp")
    args = parser.parse_args(argv)
    clients = [int(c) for c in args.clients.split(",")]

    with bench_database(args) as db:
        from bench.ingest import gunicorn, new_tenant

        print(environment_line(db))
        started = time.perf_counter()
        otlp, batches = make_bodies(args.traces, args.spans_per_request, args.seed)
        openinference = make_openinference_bodies(args.traces, args.spans_per_request,
                                                  args.seed)
        spans = sum(b.spans for b in otlp)
        print(f"{args.traces:,} traces, {spans:,} spans in {len(otlp)} export requests "
              f"({sum(len(b.data) for b in otlp) / len(otlp) / 1024:.0f} KB protobuf each; "
              f"batches: {sum(len(b.data) for b in batches) / len(batches) / 1024:.0f} KB "
              f"JSON each), built in {time.perf_counter() - started:.1f} s", file=sys.stderr)

        phases: list[Phase] = []
        with gunicorn(args.workers, "sync", 1, args.data_dir) as (port, cmd):
            print(f"server: gunicorn {cmd}")
            for n in clients:
                for label, bodies, path, ctype, ok in (
                        ("otlp", otlp, "/v1/traces", "application/x-protobuf", (200,)),
                        ("otlp-openinference", openinference, "/v1/traces",
                         "application/x-protobuf", (200,)),
                        ("batches", batches, "/api/v1/batches/", "application/json", (201,))):
                    reset()
                    tenant, key = new_tenant(f"bench-{label}-{n}", ["ingest"])
                    register_tools(tenant)
                    print(f"{label} x{n} ...", file=sys.stderr)
                    seconds, latencies = post_all(port, key, bodies, n, path, ctype, ok)
                    check_stored(tenant, args.traces)
                    phases.append(Phase(f"{label} {path} x{n}", seconds, spans, latencies))

        print()
        rows = []
        for p in phases:
            lat = sorted(p.latencies_ms)
            rows.append([p.name, p.seconds, p.spans_per_s, p.spans_per_s / SPANS_PER_TRACE,
                         lat[len(lat) // 2], lat[int(len(lat) * 0.95)]])
        print(table(["phase", "seconds", "spans/s", "runs/s", "request p50 ms",
                     "request p95 ms"], rows))
        for n in clients:
            genai = next(p for p in phases if p.name == f"otlp /v1/traces x{n}")
            oi = next(p for p in phases if p.name == f"otlp-openinference /v1/traces x{n}")
            ratio = oi.spans_per_s / genai.spans_per_s
            print(f"OpenInference x{n}: {oi.spans_per_s:,.0f} spans/s, {ratio:.0%} of GenAI's "
                  f"{genai.spans_per_s:,.0f}  target >= {TARGET_OPENINFERENCE_RATIO:.0%}: "
                  f"{verdict(ratio >= TARGET_OPENINFERENCE_RATIO)}")
        best = max((p for p in phases if p.name.startswith("otlp /")),
                   key=lambda p: p.spans_per_s)
        same = next(p for p in phases if p.name == best.name.replace(
            "otlp /v1/traces", "batches /api/v1/batches/"))
        print(f"\nOTLP best: {best.spans_per_s:,.0f} spans/s ({best.name}); the batch endpoint "
              f"with the same content and clients: {same.spans_per_s:,.0f} spans/s "
              f"({best.spans_per_s / same.spans_per_s:.0%})  target >= {TARGET_SPANS_PER_S:,}"
              f" spans/s: {verdict(best.spans_per_s >= TARGET_SPANS_PER_S)}")


if __name__ == "__main__":
    main()
