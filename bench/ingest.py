"""Ingestion through the real API, beside the service path and raw COPY of the same rows.

    .venv/bin/python -m bench.ingest                          # 100,000 tool calls
    .venv/bin/python -m bench.ingest --tool-calls 20000 --clients 2

Target: the API (HTTP, authenticated, validated, chained) ingests tool calls at >= 10% of the
rate of psycopg ``COPY`` of the same tool-call rows into a table of the same layout.

Phases, all in one run against one throwaway PostgreSQL database (``ledger_bench_ingest``), the
ledger tables emptied (TRUNCATE + CHECKPOINT) before each so every phase starts alike:

1. ``api xN``: gunicorn with production's configuration (``deploy/gunicorn.conf.py``: its
   worker count unless ``--workers`` says otherwise) serves the app on 127.0.0.1; N
   client threads (``--clients``, default ``1,2``: one phase per value) each hold one
   ``http.client`` connection (keep-alive) and POST the pre-serialized batches (<= 1,000 records
   each) to ``/api/v1/batches/`` with ``Authorization: Bearer <ingest key>``.
2. ``service``: the same bodies in-process: ``orjson.loads`` -> ``parse_batch`` ->
   ``ingest_batch``, one process, no HTTP/auth/DRF (the view minus the web stack).
3. ``COPY``: the tool-call rows the service phase stored (same values, JSON included) are read
   back, then written with ``cursor.copy()`` into ``bench_copy_toolcall`` (``LIKE runs_toolcall
   INCLUDING ALL``: same columns, defaults, indexes and unique constraints, no foreign keys),
   JSON dumped with orjson inside the timed section. The same for the four other record tables
   gives an all-records COPY figure to set beside the API's records/s.

Needs gunicorn in the venv (``.venv/bin/pip install gunicorn``): a bench-only dependency.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    profile_call,
    record_figure,
    table,
    verdict,
)
from bench.generate import batches, generate_runs

REPO = Path(__file__).resolve().parent.parent
#: What production's web process runs with (``deploy/entrypoint.sh web``): the benchmarks'
#: gunicorn loads it, then overrides only the address, the log level and the timeouts.
PRODUCTION_CONF = REPO / "deploy" / "gunicorn.conf.py"


def production_workers() -> int:
    """The number of web workers production starts here: deploy/gunicorn.conf.py's
    (``WEB_CONCURRENCY``, else 2 x cores + 1)."""
    import runpy

    return int(runpy.run_path(str(PRODUCTION_CONF))["workers"])
TARGET_RATIO = 0.20
LEDGER_TABLES = ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation")


@dataclass
class Payload:
    body: bytes
    records: int
    tool_calls: int


@dataclass
class PhaseResult:
    name: str
    seconds: float
    tool_calls: int
    records: int
    latencies_ms: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def tool_calls_per_s(self) -> float:
        return self.tool_calls / self.seconds

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds


# -- data ------------------------------------------------------------------------------------


def make_payloads(tool_calls: int, seed: int, max_records: int) -> list[Payload]:
    out = []
    for batch in batches(generate_runs("bench", tool_calls, seed), max_records):
        records = sum(1 + len(r["steps"]) + len(r["model_calls"]) + len(r["tool_calls"])
                      for r in batch)
        out.append(Payload(orjson.dumps({"runs": batch}), records,
                           sum(len(r["tool_calls"]) for r in batch)))
    return out


def reset_ledger() -> None:
    """Empty the ledger tables and checkpoint, so each phase starts from the same state.

    The ledger's append-only triggers refuse TRUNCATE; in this throwaway database a superuser
    session sets ``session_replication_role = replica`` for the one transaction, which skips
    ordinary triggers (the bench connects as ``postgres``)."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute(f"TRUNCATE {', '.join(LEDGER_TABLES)} CASCADE")
    with connection.cursor() as cursor:
        cursor.execute("CHECKPOINT")


def stored_tool_calls(tenant: Any) -> int:
    from runs.models import ToolCall

    return ToolCall.objects.filter(tenant=tenant).count()


def new_tenant(slug: str, scopes: list[str] | None = None) -> tuple[Any, str]:
    from core.models import Tenant
    from core.services import issue_api_key

    tenant = Tenant.objects.create(slug=slug, name=slug)
    raw = ""
    if scopes:
        _, raw = issue_api_key(tenant, "bench", scopes)
    return tenant, raw


# -- the HTTP server -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def gunicorn(workers: int, worker_class: str, threads: int, log_dir: str,
             app: str = "ledger_portal.wsgi:application"):
    try:
        import gunicorn as _  # noqa: F401
    except ImportError:
        sys.exit("bench.ingest needs gunicorn: .venv/bin/pip install gunicorn")
    port = free_port()
    log_path = Path(log_dir) / f"gunicorn-{port}.log"
    cmd = [sys.executable, "-m", "gunicorn", app, "--config", str(PRODUCTION_CONF),
           "--chdir", str(REPO), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
           "--worker-class", worker_class, "--threads", str(threads), "--keep-alive", "30",
           "--timeout", "300", "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=os.environ.copy(), stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                sys.exit(f"gunicorn exited ({proc.returncode}); see {log_path}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/v1/tenants/")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit(f"gunicorn did not answer within 60 s; see {log_path}")
                time.sleep(0.2)
        yield port, " ".join(cmd[2:])
    finally:
        proc.terminate()  # graceful stop of the master we started
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def post_all(port: int, key: str, payloads: list[Payload], clients: int
             ) -> tuple[float, list[float], int]:
    """POST every payload once over ``clients`` keep-alive connections; (seconds, latencies,
    reconnects). Stops at the first non-2xx answer."""
    work: queue.Queue[int] = queue.Queue()
    for i in range(len(payloads)):
        work.put(i)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
               "Connection": "keep-alive"}
    latencies: list[float] = []
    errors: list[str] = []
    reconnects = [0]
    lock = threading.Lock()

    def warm(conn: http.client.HTTPConnection) -> None:
        for _ in range(3):  # imports, DB connection, key lookup: paid before timing
            conn.request("GET", "/api/v1/tenants/", headers=headers)
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                raise RuntimeError(f"warm-up GET answered {resp.status}")

    def client(conn: http.client.HTTPConnection) -> None:
        mine: list[float] = []
        while not errors:
            try:
                i = work.get_nowait()
            except queue.Empty:
                break
            if conn.sock is None:
                with lock:
                    reconnects[0] += 1
            started = time.perf_counter()
            conn.request("POST", "/api/v1/batches/", body=payloads[i].body, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            mine.append((time.perf_counter() - started) * 1000)
            if resp.status not in (200, 201):
                errors.append(f"batch {i}: HTTP {resp.status} {body[:500]!r}")
                break
        with lock:
            latencies.extend(mine)

    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=300) for _ in range(clients)]
    for conn in conns:
        warm(conn)
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
        sys.exit("the API refused a batch: " + errors[0])
    return elapsed, latencies, reconnects[0]


# -- the service path ------------------------------------------------------------------------


def ingest_in_process(tenant: Any, payloads: list[Payload]) -> tuple[float, list[float]]:
    from runs.ingest_schema import parse_batch
    from runs.services import ingest_batch

    latencies = []
    started = time.perf_counter()
    for payload in payloads:
        t0 = time.perf_counter()
        ingest_batch(tenant, parse_batch(orjson.loads(payload.body)), recorded_by="bench")
        latencies.append((time.perf_counter() - t0) * 1000)
    return time.perf_counter() - started, latencies


# -- COPY ------------------------------------------------------------------------------------


def copy_tables(db_url: str, tenant_id: int, repeat: int = 3
                ) -> dict[str, tuple[int, float]]:
    """For each ledger table: read the tenant's rows back, then COPY them into a table of the
    same layout, ``repeat`` times (timed); {table: (rows, median seconds)}."""
    import psycopg
    from psycopg.types.json import Jsonb

    def dumps(obj: Any) -> str:
        return orjson.dumps(obj).decode()

    results: dict[str, tuple[int, float]] = {}
    with psycopg.connect(db_url) as conn:
        for name in LEDGER_TABLES:
            cols = [r[0] for r in conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position", [name]).fetchall()
                if r[0] != "id"]
            json_cols = {r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "AND data_type IN ('json', 'jsonb')", [name]).fetchall()}
            rows = conn.execute(
                f"SELECT {', '.join(cols)} FROM {name} WHERE tenant_id = %s ORDER BY id",
                [tenant_id]).fetchall()
            target = f"bench_copy_{name.removeprefix('runs_')}"
            json_at = [i for i, c in enumerate(cols) if c in json_cols]
            timings = []
            for _ in range(repeat):  # a fresh table each time; the median is reported
                conn.execute(f"DROP TABLE IF EXISTS {target}")
                conn.execute(f"CREATE TABLE {target} (LIKE {name} INCLUDING ALL)")
                conn.commit()
                conn.execute("CHECKPOINT")
                conn.commit()
                started = time.perf_counter()
                with conn.cursor() as cur, cur.copy(
                        f"COPY {target} ({', '.join(cols)}) FROM STDIN") as copy:
                    for row in rows:
                        values = list(row)
                        for i in json_at:
                            if values[i] is not None:
                                values[i] = Jsonb(values[i], dumps=dumps)
                        copy.write_row(values)
                conn.commit()
                timings.append(time.perf_counter() - started)
            results[name] = (len(rows), statistics.median(timings))
    return results


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-records", type=int, default=1000,
                        help="records per batch (the API allows 1,000)")
    parser.add_argument("--clients", default="1,2,4",
                        help="concurrent client connections; a comma list runs one API phase "
                        "per value (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn worker processes (default: production's, "
                        "deploy/gunicorn.conf.py: WEB_CONCURRENCY or 2 x cores + 1)")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"],
                        help="gunicorn worker class (sync closes each connection after its "
                        "response; gthread keeps it alive)")
    parser.add_argument("--threads", type=int, default=1, help="threads per gthread worker")
    parser.add_argument("--copy-repeat", type=int, default=3,
                        help="COPY each table this many times (fresh table each), report the "
                        "median (default %(default)s)")
    parser.add_argument("--skip-api", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--profile", action="store_true",
                        help="after timing, cProfile the service path and the in-process API "
                        "view (test Client) over 20 batches each")
    add_db_arguments(parser, "ingest")
    args = parser.parse_args(argv)
    args.workers = args.workers or production_workers()
    client_counts = [int(c) for c in args.clients.split(",") if c.strip()]

    print(f"generating {args.tool_calls:,} tool calls ...", file=sys.stderr)
    payloads = make_payloads(args.tool_calls, args.seed, args.max_records)
    total_calls = sum(p.tool_calls for p in payloads)
    total_records = sum(p.records for p in payloads)
    total_mb = sum(len(p.body) for p in payloads) / 1e6

    with bench_database(args) as db:
        print(environment_line(db))
        print(f"data: {total_calls:,} tool calls, {total_records:,} records in {len(payloads)} "
              f"batches ({total_mb:,.1f} MB of JSON, <= {args.max_records} records each)")
        results: list[PhaseResult] = []
        last_tenant = None

        if not args.skip_api:
            with gunicorn(args.workers, args.worker_class, args.threads, args.data_dir) as (
                    port, cmd):
                print(f"server: {cmd}")
                for clients in client_counts:
                    reset_ledger()
                    tenant, key = new_tenant(f"api-c{clients}", ["ingest", "view_ledger"])
                    print(f"api x{clients} ...", file=sys.stderr)
                    seconds, lat, reconnects = post_all(port, key, payloads, clients)
                    stored = stored_tool_calls(tenant)
                    assert stored == total_calls, (stored, total_calls)
                    results.append(PhaseResult(
                        f"API over HTTP, {clients} client{'s' * (clients > 1)}", seconds,
                        total_calls, total_records, lat,
                        f"{args.workers} {args.worker_class} workers, "
                        f"{reconnects} reconnects"))
                    last_tenant = tenant

        if not args.skip_service:
            reset_ledger()
            tenant, _ = new_tenant("service")
            print("service ...", file=sys.stderr)
            seconds, lat = ingest_in_process(tenant, payloads)
            assert stored_tool_calls(tenant) == total_calls
            results.append(PhaseResult("service (ingest_batch in-process)", seconds,
                                        total_calls, total_records, lat, "1 process, no HTTP"))
            last_tenant = tenant

        if last_tenant is None:
            sys.exit("nothing ingested: drop --skip-api or --skip-service")
        print("COPY ...", file=sys.stderr)
        copied = copy_tables(db.url, last_tenant.pk, args.copy_repeat)
        tc_rows, tc_seconds = copied["runs_toolcall"]
        assert tc_rows == total_calls, (tc_rows, total_calls)
        copy_tc = PhaseResult("COPY runs_toolcall rows (ceiling)", tc_seconds, tc_rows, tc_rows,
                              note=f"cursor.copy(), median of {args.copy_repeat}")
        all_rows = sum(r for r, _ in copied.values())
        all_seconds = sum(s for _, s in copied.values())
        copy_all = PhaseResult("COPY all 5 ledger tables", all_seconds, total_calls, all_rows,
                               note=f"{all_rows:,} rows")

        print()
        rows = []
        for r in [*results, copy_tc, copy_all]:
            lat = sorted(r.latencies_ms)
            rows.append([r.name, r.seconds, r.tool_calls_per_s, r.records_per_s,
                         r.tool_calls_per_s / copy_tc.tool_calls_per_s * 100,
                         lat[len(lat) // 2] if lat else "", lat[int(len(lat) * 0.95)] if lat
                         else "", r.note])
        print(table(["phase", "seconds", "tool calls/s", "records/s", "% of COPY",
                     "batch p50 ms", "batch p95 ms", "note"], rows))
        print("(records/s counts runs, steps, model calls and tool calls; the COPY row's "
              "records are tool-call rows only)")

        api = [r for r in results if r.name.startswith("API")]
        if api:
            best = max(api, key=lambda r: r.tool_calls_per_s)
            ratio = best.tool_calls_per_s / copy_tc.tool_calls_per_s
            print(f"\nAPI/COPY: {ratio:.1%} ({best.tool_calls_per_s:,.0f} vs "
                  f"{copy_tc.tool_calls_per_s:,.0f} tool calls/s; best API phase: {best.name})"
                  f"  target >= {TARGET_RATIO:.0%}: {verdict(ratio >= TARGET_RATIO)}")
            for r in api:
                record_figure("ingest", f"tool calls/s, {r.name}", f"{r.tool_calls_per_s:,.0f}",
                              f">= {TARGET_RATIO:.0%} of COPY",
                              f"COPY {copy_tc.tool_calls_per_s:,.0f} rows/s",
                              f"{r.tool_calls_per_s / copy_tc.tool_calls_per_s:.1%}",
                              r.tool_calls_per_s / copy_tc.tool_calls_per_s >= TARGET_RATIO)
            service = [r for r in results if r.name.startswith("service")]
            if service:
                one = next((r for r in api if r.name.endswith(" 1 client")), None)
                if one is not None:
                    print(f"HTTP + auth + DRF overhead, 1 client vs service path: the API "
                          f"runs at {one.tool_calls_per_s / service[0].tool_calls_per_s:.0%} "
                          "of the in-process rate")

        if args.profile:
            profile_paths(payloads[:20], args)


def profile_paths(payloads: list[Payload], args: argparse.Namespace) -> None:
    from django.test import Client

    from runs.ingest_schema import parse_batch
    from runs.services import ingest_batch

    reset_ledger()
    tenant, _ = new_tenant("profile-service")

    def service() -> None:
        for payload in payloads:
            ingest_batch(tenant, parse_batch(orjson.loads(payload.body)), recorded_by="bench")

    print(f"\n== cProfile: service path, {len(payloads)} batches (top by tottime)")
    print(profile_call(service, top=25, sort="tottime"))

    reset_ledger()
    _, key = new_tenant("profile-api", ["ingest"])
    client = Client(HTTP_HOST="127.0.0.1", headers={"Authorization": f"Bearer {key}"})

    def view() -> None:
        for payload in payloads:
            resp = client.post("/api/v1/batches/", data=payload.body,
                               content_type="application/json")
            assert resp.status_code in (200, 201), resp.content[:300]

    print(f"== cProfile: API view in-process (test Client), {len(payloads)} batches "
          "(top by cumulative)")
    print(profile_call(view, top=40, sort="cumulative"))


if __name__ == "__main__":
    main()
