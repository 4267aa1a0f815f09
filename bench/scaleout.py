"""Past one machine: the same load against 1 web process, then against 2 (issue #17, item 5).

    .venv/bin/python -m bench.scaleout                        # 2,000 decisions, 600 traces
    .venv/bin/python -m bench.scaleout --requests 600 --traces 200    # while developing

"2 web processes" is what two machines behind a load balancer run: two separate gunicorn
masters (``--workers`` sync workers each, as bench.decisions and bench.otlp) on two loopback
ports, over one PostgreSQL and one Redis, with the clients spread over both (client i talks to
process i mod 2). "1 web process" is one such master taking every client. The same clients
(``--clients``, default 4), the same requests, the same data setup in both:

- **decisions**: ``POST /api/v1/decisions/`` of bench.decisions' pool (its 50-rule policy
  published in fresh tenants, one in outage mode and one not per phase, its pre-serialized
  proposed calls), ``--requests`` per phase. Every answer must be 201 with the plain-Python
  reference's effect, and every decision must be stored (rows counted afterwards).
- **spans**: ``POST /v1/traces`` of bench.otlp's GenAI agent traces (9 spans each, whole
  traces, ``--spans-per-request`` a request), ``--traces`` per phase, one exporter per client,
  the ledger emptied before each phase. Every answer must be 200 with no partial success, and
  every trace a closed run with its 8 calls (counted afterwards).

Last, a control: one process with twice the workers (as many as the two processes had
together), the same load, shown beside the 2-process figure: on one machine, what a second
process adds is its workers, and this separates the two.

Target: the honest one for a shared 2-core machine is "serves correctly": every answer as
above and every row counted, with either number of processes, which is what statelessness
promises (tests/integration/test_stateless_web.py proves the rest: sessions, lockout, rate
limits, approvals and policy versions across two processes). The throughput ratio 2/1 is
printed against the same-run 1-process figure but not graded: one process already runs as
many workers as there are cores here, so a second process (on the same cores, with PostgreSQL
and the other benchmarks beside it) cannot add throughput; on two machines it adds the second
machine's cores, up to what the one PostgreSQL primary writes.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    percentile,
    record_figure,
    table,
)

BENCH = "scaleout"
DECISIONS_URL = "/api/v1/decisions/"
CORRECT = "serves correctly: every answer 201/200 as expected, rows counted"


@dataclass
class Result:
    name: str
    processes: int
    seconds: float
    items: int  # decisions or spans
    latencies_ms: list[float] = field(default_factory=list)
    per_port: Counter[int] = field(default_factory=Counter)
    wrong: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.items / self.seconds


@contextlib.contextmanager
def web_processes(count: int, workers: int, log_dir: str) -> Iterator[list[int]]:
    """``count`` separate gunicorn masters (bench.ingest's helper), each on its own port."""
    from bench.ingest import gunicorn

    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            port, cmd = stack.enter_context(gunicorn(workers, "sync", 1, log_dir))
            ports.append(port)
        print(f"web processes on ports {ports}: gunicorn {cmd}", file=sys.stderr)
        yield ports


def drive(ports: list[int], clients: int, jobs: list[Any], send: Any) -> tuple[
        float, list[float], Counter[int], list[str]]:
    """``clients`` threads, client i holding one keep-alive connection to ``ports[i % n]``,
    take jobs from one shared queue (or, with ``jobs`` a list of per-client lists, each its
    own list in order); ``send(conn, job)`` returns an error text or "". (seconds, latencies,
    jobs per port, errors)."""
    shared: queue.Queue[Any] = queue.Queue()
    own = isinstance(jobs[0], list) if jobs else False
    if not own:
        for job in jobs:
            shared.put(job)
    latencies: list[float] = []
    per_port: Counter[int] = Counter()
    errors: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        port = ports[i % len(ports)]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        mine: list[float] = []
        mine_jobs = iter(jobs[i]) if own else None
        while not errors:
            if mine_jobs is not None:
                job = next(mine_jobs, None)
                if job is None:
                    break
            else:
                try:
                    job = shared.get_nowait()
                except queue.Empty:
                    break
            started = time.perf_counter()
            error = send(conn, job)
            mine.append((time.perf_counter() - started) * 1000)
            if error:
                errors.append(error)
                break
        conn.close()
        with lock:
            latencies.extend(mine)
            per_port[port] += len(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started, latencies, per_port, errors


# -- decisions -------------------------------------------------------------------------------


def decisions_setup(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """bench.decisions' rules and pool, each call with the reference's effect."""
    from bench.decisions import DEFAULT_EFFECT, Reference, make_pool, rule_specs

    specs = rule_specs(args.rules)
    pool = make_pool(args.pool, args.seed)
    reference = Reference(DEFAULT_EFFECT, specs)
    for call in pool:
        call.expected, call.expected_rules = reference.decide(call.doc("any"))
    return pool, specs


def decisions_phase(name: str, ports: list[int], clients: int, tenants: dict[str, Any],
                    pool: list[Any], count: int) -> Result:
    import orjson

    from approvals.models import ApprovalRequest
    from bench.decisions import warm_server
    from policies.models import Decision

    plain, plain_key, _ = tenants[name]
    outage, outage_key, _ = tenants[f"{name}-outage"]
    requests = [(outage_key if c.outage else plain_key, c.body(), c.expected)
                for c in (pool[i % len(pool)] for i in range(count))]
    warm = ([r for r in requests if r[0] == plain_key][:12]
            + [r for r in requests if r[0] == outage_key][:12])
    for port in ports:
        warm_server(port, warm)  # imports, connections, each tenant's policy compiled
    mine = [plain, outage]
    before = Decision.objects.filter(tenant__in=mine).count()
    before_held = ApprovalRequest.objects.filter(tenant__in=mine).count()
    wrong: list[str] = []
    held = [0]

    def send(conn: http.client.HTTPConnection, job: tuple[str, bytes, str]) -> str:
        key, body, expected = job
        conn.request("POST", DECISIONS_URL, body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json",
            "Connection": "keep-alive"})
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 201:
            return f"HTTP {resp.status} {answer[:300]!r}"
        data = orjson.loads(answer)
        if data["effect"] != expected:
            wrong.append(f"{data['effect']} != reference {expected}")
        if data.get("approval"):
            held[0] += 1
        return ""

    print(f"decisions, {len(ports)} process(es), {clients} clients ...", file=sys.stderr)
    seconds, latencies, per_port, errors = drive(ports, clients, requests, send)
    if errors:
        sys.exit(f"the API refused a decision: {errors[0]}")
    stored = Decision.objects.filter(tenant__in=mine).count() - before
    opened = ApprovalRequest.objects.filter(tenant__in=mine).count() - before_held
    if stored != len(requests):
        wrong.append(f"{stored} decisions stored for {len(requests)} answered")
    if opened != held[0]:
        wrong.append(f"{opened} approval requests opened, {held[0]} answered")
    return Result(f"decisions, {len(ports)} process(es)", len(ports), seconds, len(requests),
                  latencies, per_port, wrong)


# -- spans -----------------------------------------------------------------------------------


def spans_phase(label: str, ports: list[int], clients: int, traces: list[Any],
                spans_per_request: int) -> Result:
    from bench.ingest import new_tenant
    from bench.otlp import SPANS_PER_TRACE, check_stored, register_tools, reset, streams

    reset()
    tenant, key = new_tenant(f"bench-scaleout-{label}", ["ingest"])
    register_tools(tenant)
    client_streams = streams(traces, "whole", spans_per_request, clients)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-protobuf",
               "Connection": "keep-alive"}
    for port in ports:  # imports, DB connection, key lookup: paid before timing
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for _ in range(4):
            conn.request("GET", "/api/v1/tenants/", headers=headers)
            conn.getresponse().read()
        conn.close()

    def send(conn: http.client.HTTPConnection, body: Any) -> str:
        conn.request("POST", "/v1/traces", body=body.data, headers=headers)
        resp = conn.getresponse()
        answer = resp.read()
        if resp.status != 200 or answer:
            return f"HTTP {resp.status} {answer[:300]!r}"
        return ""

    print(f"spans, {len(ports)} process(es), {clients} exporters ...", file=sys.stderr)
    seconds, latencies, per_port, errors = drive(ports, len(client_streams), client_streams,
                                                 send)
    if errors:
        sys.exit(f"/v1/traces refused a request: {errors[0]}")
    check_stored(tenant, len(traces))  # exits naming what is missing
    return Result(f"spans, {len(ports)} process(es)", len(ports), seconds,
                  len(traces) * SPANS_PER_TRACE, latencies, per_port)


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000,
                        help="decisions per phase (default %(default)s)")
    parser.add_argument("--traces", type=int, default=600,
                        help="agent traces (9 spans each) per phase (default %(default)s)")
    parser.add_argument("--clients", type=int, default=4,
                        help="client connections in every phase, spread over the processes")
    parser.add_argument("--workers", type=int, default=2,
                        help="gunicorn sync workers of each web process")
    parser.add_argument("--rules", type=int, default=50)
    parser.add_argument("--pool", type=int, default=2000)
    parser.add_argument("--spans-per-request", type=int, default=504)
    parser.add_argument("--seed", type=int, default=7)
    add_db_arguments(parser, "scaleout")
    args = parser.parse_args(argv)
    if args.clients < 2:
        parser.error("--clients must be at least 2 (one per web process)")

    with bench_database(args) as db:
        from bench.decisions import publish_everywhere
        from bench.otlp import agent_trace

        pool, specs = decisions_setup(args)
        rng = random.Random(args.seed)
        traces = [agent_trace(rng, n) for n in range(args.traces)]
        print(environment_line(db))
        print(f"load average at start: {load_average()}")
        tenants = publish_everywhere([(f"p{n}{suffix}", outage) for n in (1, 2, 3)
                                      for suffix, outage in (("", False), ("-outage", True))],
                                     specs)
        results: list[Result] = []
        with web_processes(1, args.workers, args.data_dir) as first:
            results.append(decisions_phase("p1", first, args.clients, tenants, pool,
                                           args.requests))
            results.append(spans_phase("p1", first, args.clients, traces,
                                       args.spans_per_request))
            # the second process joins the first, which keeps running (and its warm workers)
            with web_processes(1, args.workers, args.data_dir) as second:
                both = first + second
                results.append(decisions_phase("p2", both, args.clients, tenants, pool,
                                               args.requests))
                results.append(spans_phase("p2", both, args.clients, traces,
                                           args.spans_per_request))
        # the control: one process with as many workers as the two had together, so the
        # 2-process ratio can be read as "more workers" against "more processes"
        with web_processes(1, 2 * args.workers, args.data_dir) as one_big:
            control = [decisions_phase("p3", one_big, args.clients, tenants, pool,
                                       args.requests),
                       spans_phase("p3", one_big, args.clients, traces,
                                   args.spans_per_request)]
            for r in control:
                r.name = r.name.replace("1 process(es)", f"1 process x {2 * args.workers} "
                                        "workers")
                r.processes = 0  # not one of the two graded configurations
            results += control

    cores = os.cpu_count() or 1
    print(f"\n== the same load against 1 and 2 web processes ({args.workers} sync workers "
          f"each, {args.clients} clients spread over them; {cores} cores on this machine, "
          "shared with PostgreSQL and the clients)")
    rows = []
    for r in results:
        unit = "decisions/s" if r.name.startswith("decisions") else "spans/s"
        rows.append([r.name, r.items, r.seconds, f"{r.rate:,.0f} {unit}",
                     percentile(r.latencies_ms, 50), percentile(r.latencies_ms, 95),
                     " / ".join(str(n) for _, n in sorted(r.per_port.items())),
                     len(r.wrong)])
    print(table(["phase", "items", "seconds", "rate", "request p50 ms", "request p95 ms",
                 "requests per process", "wrong"], rows))
    for r in results:
        for line in r.wrong[:5]:
            print(f"  WRONG ({r.name}): {line}")
    workers_total = 2 * args.workers
    print(f"load average: {load_average()}")
    print(f"note: {workers_total} workers in 2 processes on {cores} cores: with as many "
          "workers as cores already in one process, the 2-process ratio shows what running "
          "two processes costs or gains here, not what a second machine adds.")

    for what, unit in (("decisions", "decisions/s"), ("spans", "spans/s")):
        one, two, big = (next(r for r in results if r.name.startswith(what)
                              and r.processes == n) for n in (1, 2, 0))
        what_line = ("POST /api/v1/decisions/ (decision stored)" if what == "decisions"
                     else "POST /v1/traces, whole GenAI traces")
        record_figure(BENCH, f"{what_line}, 1 web process x {args.workers} workers, "
                      f"{args.clients} clients", f"{one.rate:,.0f} {unit}", CORRECT, "-", "-",
                      not one.wrong)
        record_figure(BENCH, f"{what_line}, 2 web processes x {args.workers} workers, "
                      f"{args.clients} clients spread over both", f"{two.rate:,.0f} {unit}",
                      f"{CORRECT} (throughput not graded: {cores} shared cores)",
                      f"1 process, same run: {one.rate:,.0f} {unit}",
                      f"{two.rate / one.rate:.2f}x", not two.wrong)
        record_figure(BENCH, f"{what_line}, control: 1 web process x {2 * args.workers} "
                      f"workers (as many as the 2 processes), {args.clients} clients",
                      f"{big.rate:,.0f} {unit}", "- (shown beside the 2-process figure)",
                      f"2 processes x {args.workers}, same run: {two.rate:,.0f} {unit}",
                      f"{big.rate / two.rate:.2f}x", None)


if __name__ == "__main__":
    main()
