"""OpenTelemetry GenAI spans through ``POST /v1/traces`` as exporters really send them (whole
traces, traces split over two requests, over three), beside the ledger's own batch endpoint with
the same content, in the same run.

    .venv/bin/python -m bench.otlp                         # 5,000 agent traces, 45,000 spans
    .venv/bin/python -m bench.otlp --traces 600 --clients 1,2   # while developing

Targets (gunicorn with production's configuration, as ``bench.ingest``, PostgreSQL, 2 cores):
split traces >= 3,000 spans/s with 1 client (#19); whole traces >= 6,000 spans/s with 2
clients (#17); OpenInference within 20% of GenAI's spans/s.
Every client count of every shape is reported.

Each trace is one agent run as GenAI instrumentation emits it: an ``invoke_agent`` root span
with 3 ``chat`` spans (captured input/output messages, token usage) and 5 ``execute_tool``
spans (arguments and results; one in five fails), 9 spans a trace. Traces go in groups of
``--spans-per-request // 9`` (56); request k carries part 0 of group k, part 1 of group k-1, ...
(what a BatchSpanProcessor flushes: whatever has ended, children before their root):

- ``whole``: the whole trace in one request;
- ``split``: the children in request k, their roots in request k+1;
- ``three``: the chat spans in k, the tool spans in k+1, the roots in k+2.

Each client is one exporter with its own share of the traces, posting its stream in order.
Phases, the ledger and span buffer emptied (TRUNCATE + CHECKPOINT) before each, for each
``--clients`` value: every shape; ``openinference`` (the same runs as OpenInference emits them,
whole); then, with ``--read-clients`` (2) clients, every shape "under read load": a thread
GETs ``/api/v1/runs/<run>/`` of a ~2,000-record run (``--read-records``) in a loop, at most
``--read-limit`` times, while they post; finally ``batches`` (the records the receiver's
assembly makes of the same traces, run offline, as JSON to ``/api/v1/batches/``). Every answer
must be 200 with no partial success (201 for batches); afterwards every trace must be a closed
run with its 8 calls and no span left pending.

In-process (Django test Client, ``CaptureQueriesContext``), the SQL queries of one request
carrying roots of each shape (whole: the first request; split: the second; three: the third).
The tenant's registry knows the five tools (an unregistered tool would add a note per call).
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    percentile,
    record_figure,
    table,
)

TARGET_SPANS_PER_S = 3000  # split traces, 1 client (#19)
TARGET_WHOLE_2_CLIENTS = 6000  # whole traces, 2 clients (#17)
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


def export_request(spans: list[Any]) -> bytes:
    """One ``ExportTraceServiceRequest`` of ``spans``, as the SDK's exporter serializes it."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

    resource = ResourceSpans()
    resource.resource.attributes.extend(attributes({"service.name": "support-bot"}))
    resource.scope_spans.append(ScopeSpans(spans=spans))
    resource.scope_spans[0].scope.name = "bench.otlp"
    return bytes(ExportTraceServiceRequest(resource_spans=[resource]).SerializeToString())


#: how a trace's spans (children first, root last) are cut into the requests that carry them
SHAPES = {
    # the whole trace in one request
    "whole": lambda spans: [spans],
    # the children in request k, the root in request k+1
    "split": lambda spans: [spans[:-1], spans[-1:]],
    # the chat spans in request k, the tool spans in k+1, the root in k+2
    "three": lambda spans: [spans[:3], spans[3:-1], spans[-1:]],
}


def stream(traces: list[list[Any]], shape: str, spans_per_request: int) -> list[Body]:
    """The requests one exporter sends for ``traces`` in ``shape``. The traces go in groups of
    ``spans_per_request // 9``; request k carries part 0 of group k, part 1 of group k-1 and
    so on, as a BatchSpanProcessor flushes whatever has ended: in steady state every request
    holds about ``spans_per_request`` spans, and each trace's root comes after its children."""
    per_request = max(1, spans_per_request // SPANS_PER_TRACE)
    groups = [[SHAPES[shape](spans) for spans in traces[i:i + per_request]]
              for i in range(0, len(traces), per_request)]
    parts = len(SHAPES[shape](traces[0])) if traces else 1
    bodies = []
    for k in range(len(groups) + parts - 1):
        spans = [s for j in reversed(range(parts)) if 0 <= k - j < len(groups)
                 for cut in groups[k - j] for s in cut[j]]
        bodies.append(Body(export_request(spans), len(spans)))
    return bodies


def streams(traces: list[list[Any]], shape: str, spans_per_request: int, clients: int
            ) -> list[list[Body]]:
    """One exporter per client, each with its own share of the traces (contiguous), so each
    trace's parts go out in order, as one process's SDK sends them."""
    share = -(-len(traces) // clients)
    return [stream(traces[i:i + share], shape, spans_per_request)
            for i in range(0, len(traces), share)]


def make_batches(traces: list[list[Any]], spans_per_request: int) -> list[Body]:
    """JSON ledger batches of the same traces: the records the receiver's assembly makes of
    them (run offline), one batch per whole-trace export request."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from runs.ingest_schema import BatchIn
    from runs.otlp import assembly, wire

    batches = []
    for body in stream(traces, "whole", spans_per_request):
        decoded = wire.spans_of(ExportTraceServiceRequest.FromString(body.data))
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
                            body.spans))
    return batches


# -- HTTP ------------------------------------------------------------------------------------


def post_streams(port: int, key: str, client_streams: list[list[Body]], path: str,
                 content_type: str, ok: tuple[int, ...]) -> tuple[float, list[float]]:
    """Each client thread POSTs its own stream in order (one exporter each); the seconds from
    the first request to the last answer, and every request's latency."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": content_type}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client(conn: http.client.HTTPConnection, bodies: list[Body]) -> None:
        mine = []
        for i, body in enumerate(bodies):
            if errors:
                break
            started = time.perf_counter()
            conn.request("POST", path, body=body.data, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            mine.append((time.perf_counter() - started) * 1000)
            if resp.status not in ok or (path == "/v1/traces" and answer):
                errors.append(f"request {i}: HTTP {resp.status} {answer[:500]!r}")
                break
        with lock:
            latencies.extend(mine)

    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=300)
             for _ in client_streams]
    for conn in conns:  # imports, DB connection, key lookup: paid before timing
        for _ in range(3):
            conn.request("GET", "/api/v1/tenants/", headers=headers)
            conn.getresponse().read()
    threads = [threading.Thread(target=client, args=(c, s))
               for c, s in zip(conns, client_streams, strict=True)]
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


def round_robin(bodies: list[Body], clients: int) -> list[list[Body]]:
    return [bodies[i::clients] for i in range(clients)]


class Reader(threading.Thread):
    """The read load: GET one run's detail (its whole timeline) over and over, until told to
    stop or ``limit`` fetches, whichever comes first."""

    def __init__(self, port: int, key: str, run_id: str, limit: int) -> None:
        super().__init__(daemon=True)
        self.port, self.key, self.run_id, self.limit = port, key, run_id, limit
        self.stop = threading.Event()
        self.latencies_ms: list[float] = []
        self.error = ""

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"Authorization": f"Bearer {self.key}"}
        while not self.stop.is_set() and len(self.latencies_ms) < self.limit:
            started = time.perf_counter()
            conn.request("GET", f"/api/v1/runs/{self.run_id}/", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                self.error = f"GET run detail: HTTP {resp.status}"
                break
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
        conn.close()


def big_run_tenant(slug: str, records_target: int) -> tuple[str, str]:
    """A tenant holding one run of about ``records_target`` records (as bench.timeline_page's:
    100 steps, a model call each, tool calls, 9 notes); its run id and a view_ledger key."""
    from bench.ingest import new_tenant
    from bench.run_detail import big_run
    from bench.timeline_page import ingest, notes

    tenant, key = new_tenant(slug, ["view_ledger"])
    tool_calls = max(1, records_target - 211)  # 100 steps + 100 model calls + 10 notes + run
    run = big_run(tenant.slug, tool_calls, steps=100)
    ingest(tenant, run, notes(run["run_id"], [c["call_id"] for c in run["tool_calls"]], 9))
    return str(run["run_id"]), key


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
    from runs.models import ModelCall, OtlpSpan, Run, ToolCall

    # Issuing the ingest key records it on the tenant's governance log, a run of its own.
    runs = Run.objects.filter(tenant=tenant).exclude(run_id=GOVERNANCE_RUN_ID)
    closed = runs.exclude(status="running").count()
    calls = (ModelCall.objects.filter(tenant=tenant).count()
             + ToolCall.objects.filter(tenant=tenant).count())
    if (runs.count(), closed, calls) != (traces, traces, traces * 8):
        sys.exit(f"stored {runs.count()} runs ({closed} closed), {calls} calls; expected "
                 f"{traces} closed runs with {traces * 8} calls")
    left = OtlpSpan.objects.filter(tenant=tenant).exclude(state="recorded").count()
    if left:
        sys.exit(f"{left} span(s) not recorded (pending, late or unmapped)")


def completing_request_queries(traces: list[list[Any]], shape: str, spans_per_request: int
                               ) -> tuple[int, int, float]:
    """In-process (Django test Client): the SQL queries of the first request of ``shape``'s
    stream that carries roots (whole: the first; split: the second; three: the third), with
    the number of spans it carries and its database time in ms."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from bench.ingest import new_tenant

    reset()
    tenant, key = new_tenant(f"bench-queries-{shape}", ["ingest"])
    register_tools(tenant)
    client = Client(HTTP_HOST="localhost")
    bodies = stream(traces, shape, spans_per_request)
    completing = len(SHAPES[shape](traces[0])) - 1

    def post(body: Body) -> None:
        answer = client.post("/v1/traces", data=body.data,
                             content_type="application/x-protobuf",
                             headers={"Authorization": f"Bearer {key}"})
        if answer.status_code != 200:
            sys.exit(f"in-process /v1/traces: HTTP {answer.status_code}")

    for body in bodies[:completing]:
        post(body)
    with CaptureQueriesContext(connection) as captured:
        post(bodies[completing])
    ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
    return len(captured.captured_queries), bodies[completing].spans, ms


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=5000)
    parser.add_argument("--spans-per-request", type=int, default=504)
    parser.add_argument("--clients", default="1,2,4")
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help="trace shapes to post (default %(default)s)")
    parser.add_argument("--read-clients", type=int, default=2,
                        help="posting clients in the phases under read load (0: none)")
    parser.add_argument("--read-records", type=int, default=2000,
                        help="records of the run the reader fetches")
    parser.add_argument("--read-limit", type=int, default=5000,
                        help="most fetches the reader makes in one phase")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn sync workers (default: production's, "
                        "deploy/gunicorn.conf.py)")
    parser.add_argument("--seed", type=int, default=7)
    add_db_arguments(parser, "otlp")
    args = parser.parse_args(argv)
    if args.workers is None:
        from bench.ingest import production_workers

        args.workers = production_workers()
    clients = [int(c) for c in args.clients.split(",")]
    shapes = [s for s in args.shapes.split(",") if s]
    if unknown := set(shapes) - set(SHAPES):
        sys.exit(f"unknown shape(s) {sorted(unknown)}; known: {', '.join(SHAPES)}")

    with bench_database(args) as db:
        from bench.ingest import gunicorn, new_tenant

        print(environment_line(db))
        print(f"load average at start: {load_average()}")
        started = time.perf_counter()
        rng = random.Random(args.seed)
        genai_traces = [agent_trace(rng, n) for n in range(args.traces)]
        oi_rng = random.Random(args.seed)
        oi_traces = [openinference_trace(oi_rng, n) for n in range(args.traces)]
        batches = make_batches(genai_traces, args.spans_per_request)
        posts: dict[tuple[str, int], list[list[Body]]] = {}
        for n in clients:
            for shape in shapes:
                posts[(shape, n)] = streams(genai_traces, shape, args.spans_per_request, n)
            posts[("openinference", n)] = streams(oi_traces, "whole", args.spans_per_request,
                                                  n)
        if args.read_clients:
            for shape in shapes:
                posts[(f"{shape} under read load", args.read_clients)] = streams(
                    genai_traces, shape, args.spans_per_request, args.read_clients)
        spans = args.traces * SPANS_PER_TRACE
        whole = stream(genai_traces, "whole", args.spans_per_request)
        kb_whole = sum(len(b.data) for b in whole) / len(whole) / 1024
        kb_batch = sum(len(b.data) for b in batches) / len(batches) / 1024
        print(f"{args.traces:,} traces, {spans:,} spans; whole traces in {len(whole)} export "
              f"requests ({kb_whole:.0f} KB protobuf each; batches: {kb_batch:.0f} KB JSON "
              f"each); all bodies built in {time.perf_counter() - started:.1f} s",
              file=sys.stderr)

        phases: list[Phase] = []
        reads: dict[str, Reader] = {}
        with gunicorn(args.workers, "sync", 1, args.data_dir) as (port, cmd):
            print(f"server: gunicorn {cmd}")
            for (label, n), client_streams in posts.items():
                reset()
                slug = f"bench-{label.replace(' ', '-')}-{n}"
                tenant, key = new_tenant(slug, ["ingest"])
                register_tools(tenant)
                reader = None
                if label.endswith("under read load"):
                    run_id, view_key = big_run_tenant(f"{slug}-reader",
                                                     args.read_records)
                    reader = Reader(port, view_key, run_id, args.read_limit)
                print(f"{label} x{n} ({sum(len(s) for s in client_streams)} requests) ...",
                      file=sys.stderr)
                if reader is not None:
                    reader.start()
                seconds, latencies = post_streams(port, key, client_streams, "/v1/traces",
                                                  "application/x-protobuf", (200,))
                if reader is not None:
                    reader.stop.set()
                    reader.join(timeout=600)
                    if reader.error:
                        sys.exit(reader.error)
                    reads[label] = reader
                check_stored(tenant, args.traces)
                phases.append(Phase(f"otlp {label} x{n}", seconds, spans, latencies))
            for n in clients:
                reset()
                tenant, key = new_tenant(f"bench-batches-{n}", ["ingest"])
                register_tools(tenant)
                print(f"batches x{n} ...", file=sys.stderr)
                seconds, latencies = post_streams(port, key, round_robin(batches, n),
                                                  "/api/v1/batches/", "application/json",
                                                  (201,))
                check_stored(tenant, args.traces)
                phases.append(Phase(f"batches /api/v1/batches/ x{n}", seconds, spans,
                                    latencies))

        sample = genai_traces[:3 * max(1, args.spans_per_request // SPANS_PER_TRACE)]
        queries = {shape: completing_request_queries(sample, shape, args.spans_per_request)
                   for shape in shapes}

        print()
        rows = []
        for p in phases:
            lat = sorted(p.latencies_ms)
            rows.append([p.name, len(lat), p.seconds, p.spans_per_s,
                         p.spans_per_s / SPANS_PER_TRACE, lat[len(lat) // 2],
                         lat[int(len(lat) * 0.95)]])
        print(table(["phase", "requests", "seconds", "spans/s", "runs/s", "request p50 ms",
                     "request p95 ms"], rows))
        if reads:
            print()
            print(table(["read load (GET /api/v1/runs/<run>/, "
                         f"{args.read_records:,}-record run)", "fetches", "p50 ms", "p95 ms"],
                        [[label, len(r.latencies_ms), percentile(r.latencies_ms, 50),
                          percentile(r.latencies_ms, 95)] for label, r in reads.items()]))
        print()
        print(table(["request carrying roots (in-process)", "spans", "SQL queries",
                     "SQL ms"], [[shape, spans_in, count, ms]
                                 for shape, (count, spans_in, ms) in queries.items()]))
        print(f"\nload average: {load_average()}")

        def rate(name: str) -> float | None:
            found = next((p for p in phases if p.name == name), None)
            return None if found is None else found.spans_per_s

        for shape in shapes:
            for n in clients:
                value = rate(f"otlp {shape} x{n}")
                assert value is not None
                base = rate(f"otlp whole x{n}") if shape != "whole" else rate(
                    f"batches /api/v1/batches/ x{n}")
                target, ok = "-", None
                if (shape, n) == ("split", 1):
                    target, ok = f">= {TARGET_SPANS_PER_S:,} spans/s", (
                        value >= TARGET_SPANS_PER_S)
                elif (shape, n) == ("whole", 2):
                    target, ok = f">= {TARGET_WHOLE_2_CLIENTS:,} spans/s", (
                        value >= TARGET_WHOLE_2_CLIENTS)
                base_name = "batches" if shape == "whole" else "whole traces"
                record_figure("otlp", f"{shape} traces, {n} client(s)", f"{value:,.0f} spans/s",
                              target, "-" if base is None else
                              f"{base_name} x{n} {base:,.0f} spans/s",
                              "-" if base is None else f"{value / base:.0%}", ok)
            if args.read_clients:
                label = f"{shape} under read load"
                value = rate(f"otlp {label} x{args.read_clients}")
                reader = reads[label]
                assert value is not None
                record_figure("otlp", f"{label}, {args.read_clients} client(s)",
                              f"{value:,.0f} spans/s; reader {len(reader.latencies_ms)} "
                              f"fetches, p50 {percentile(reader.latencies_ms, 50):.0f} ms",
                              "-", f"{shape} x{args.read_clients} without reads "
                              f"{rate(f'otlp {shape} x{args.read_clients}') or 0:,.0f} spans/s",
                              "-", None)
        for n in clients:
            genai, oi = rate(f"otlp whole x{n}"), rate(f"otlp openinference x{n}")
            if genai and oi:
                record_figure("otlp", f"OpenInference whole traces, {n} client(s)",
                              f"{oi:,.0f} spans/s", f">= {TARGET_OPENINFERENCE_RATIO:.0%} of "
                              "GenAI's", f"GenAI x{n} {genai:,.0f} spans/s", f"{oi / genai:.0%}",
                              oi / genai >= TARGET_OPENINFERENCE_RATIO)
        whole_queries = queries.get("whole", (0, 0, 0.0))[0]
        for shape in shapes:
            if shape != "whole":
                record_figure("otlp", f"SQL queries of the request carrying {shape} traces' "
                              "roots", str(queries[shape][0]), "-",
                              f"whole-trace request {whole_queries}" if whole_queries else "-",
                              f"{queries[shape][0] / whole_queries:.2f}" if whole_queries
                              else "-", None)


if __name__ == "__main__":
    main()
