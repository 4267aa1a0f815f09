"""Benchmark: a strict JSONL audit export (tool calls with their runs, steps, model calls and
annotations) on PostgreSQL: records/s, and the peak memory of the export process at a small and
the full window, beside a bare ``COPY ... TO STDOUT`` of the same tool-call rows.

    .venv/bin/python -m bench.export --reuse-db            # load once, keep (1M: 6+ minutes)
    .venv/bin/python -m bench.export --tool-calls 170000 --small-share 0.33   # ~100k / ~300k
    .venv/bin/python -m bench.export --reuse-db --skip-full  # only the small windows

The exported tenant (``bench-unique``) is generated with unique strings
(``RunGenerator(unique=True)``: every address, secret and free text differs per record, so
the redaction engine's per-string detector cache cannot answer for it); a second tenant
(``bench-repeated``, the generator's default pools of repeated strings, as many tool calls as
the small window holds) is exported whole beside it, so the cache's effect shows.

Each export runs in its own subprocess (``produce_now``: plan, parts, join, as ``ledger
export`` does: the parts written by as many processes as it chooses for the window's size,
shown as "procs", counted from the parts' ``claimed_by``), so its peak RSS is its own: the
larger of its own and its biggest part-writing child's (``resource.getrusage``, ``RUSAGE_SELF``
and ``RUSAGE_CHILDREN``). Targets (#17), graded via ``record_figure``: strict export >= 30,000
records/s at the full window; peak RSS at the full window within 1.2x of the small one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    record_figure,
    table,
)

TENANT = "bench-unique"  # unique strings (what the targets are graded on)
REPEATED = "bench-repeated"  # the generator's repeated strings, for the cache's effect
TARGET_RATE = 30_000
TARGET_MEMORY_RATIO = 1.2


def ensure_data(slug: str, tool_calls: int, seed: int, unique: bool) -> str:
    from bench.generate import load
    from runs.models import ToolCall

    have = ToolCall.objects.filter(tenant__slug=slug).count()
    if have >= tool_calls:
        return f"{slug}: reused {have:,} tool calls"
    if have:
        sys.exit(f"{slug} holds {have:,} of {tool_calls:,} tool calls; drop the database first")
    started = time.perf_counter()
    load([slug], tool_calls, seed, progress=sys.stderr.isatty(), unique=unique)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return (f"{slug}: loaded {tool_calls:,} tool calls ({'unique' if unique else 'repeated'} "
            f"strings) in {time.perf_counter() - started:.0f} s")


def window_for(share: float, tenant: str = TENANT) -> tuple[str, str]:
    """A window from the tenant's first run covering about ``share`` of its runs."""
    from runs.models import Run

    runs = Run.objects.filter(tenant__slug=tenant).order_by("started_at")
    total = runs.count()
    first = runs.values_list("started_at", flat=True).first()
    if share >= 1:
        last = runs.order_by("-started_at").values_list("started_at", flat=True).first()
        assert first is not None
        assert last is not None
        return first.isoformat(), (last.replace(year=last.year + 1)).isoformat()
    cut = runs.values_list("started_at", flat=True)[int(total * share)]
    assert first is not None
    return first.isoformat(), cut.isoformat()


CHILD = r"""
import json, os, resource, sys, time
import django
django.setup()
from datetime import datetime
from django.contrib.auth.models import User
from exports.services import produce_now, request_export
from core.models import Tenant
from core.services import grant_role
tenant = Tenant.objects.get(slug=sys.argv[1])
user, _ = User.objects.get_or_create(username="bench-auditor")
grant_role(user, "export", tenant)
started = time.perf_counter()
export = request_export(tenant, datetime.fromisoformat(sys.argv[2]),
                        datetime.fromisoformat(sys.argv[3]), by=user, enqueue=False)
export = produce_now(export)
seconds = time.perf_counter() - started
print(json.dumps({"id": export.pk, "status": export.status, "error": export.error,
                  "records": export.rows_done, "counts": export.counts, "size": export.size,
                  "seconds": seconds, "parts": export.parts.count(),
                  "processes": export.parts.values("claimed_by").distinct().count(),
                  "peak_rss_kb": max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                                     resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)}))
"""


def run_export(tenant: str, window: tuple[str, str], part_rows: int) -> dict[str, Any]:
    env = {**os.environ, "LEDGER_EXPORT_PART_ROWS": str(part_rows)}
    done = subprocess.run([sys.executable, "-c", CHILD, tenant, *window], env=env,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"export failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["status"] != "done":
        sys.exit(f"export {result['id']} {result['status']}: {result['error']}")
    return result


def copy_baseline(tenant: str, window: tuple[str, str]) -> tuple[int, float]:
    """``COPY (SELECT <tool-call columns> ...same filter...) TO STDOUT``: rows and seconds."""
    from django.db import connection

    sql = ("COPY (SELECT t.* FROM runs_toolcall t WHERE t.tenant_id = (SELECT id FROM "
           "ledger_portal_tenant WHERE slug = %s) AND t.run_id IN (SELECT id FROM runs_run "
           "WHERE started_at >= %s AND started_at < %s) ORDER BY t.id) TO STDOUT")
    rows = 0
    started = time.perf_counter()
    with connection.cursor() as cursor:
        raw = cursor.cursor
        with raw.copy(sql, [tenant, *window]) as copy:
            for data in copy:
                rows += bytes(data).count(b"\n")
    return rows, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=1_000_000,
                        help="tool calls of the exported tenant (unique strings)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--small-share", type=float, default=0.1,
                        help="share of the runs in the small window (default 0.1)")
    parser.add_argument("--repeated-tool-calls", type=int, default=None,
                        help="tool calls of the repeated-string tenant, exported whole "
                        "(default: tool calls x small share; 0: leave it out)")
    parser.add_argument("--part-rows", type=int, default=250_000)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--reuse-db", action="store_true", help="reuse (and keep) the database")
    add_db_arguments(parser, "export")
    args = parser.parse_args(argv)
    if args.reuse_db:
        args.keep = True
    repeated_calls = (round(args.tool_calls * args.small_share)
                      if args.repeated_tool_calls is None else args.repeated_tool_calls)
    with bench_database(args, reuse=args.reuse_db) as db:
        print(environment_line(db), flush=True)
        print(ensure_data(TENANT, args.tool_calls, args.seed, unique=True), flush=True)
        if repeated_calls:
            print(ensure_data(REPEATED, repeated_calls, args.seed, unique=False), flush=True)
        print(f"load average: {load_average()}", flush=True)
        os.environ["DATABASE_URL"] = db.url
        cases = [("small", TENANT, args.small_share)]
        cases += [] if args.skip_full else [("full", TENANT, 1.0)]
        cases += [("repeated strings", REPEATED, 1.0)] if repeated_calls else []
        rows = []
        results = {}
        for name, tenant, share in cases:
            window = window_for(share, tenant)
            result = run_export(tenant, window, args.part_rows)
            copied, copy_seconds = copy_baseline(tenant, window)
            results[name] = result
            rate = result["records"] / result["seconds"]
            rows.append([f"{name} ({tenant})", result["counts"].get("tool_call", 0),
                         result["records"], result["parts"], result["processes"],
                         f"{result['seconds']:.1f}", rate,
                         f"{result['size'] / 1e6:.0f} MB", f"{result['peak_rss_kb'] / 1024:.0f}",
                         copied, f"{copy_seconds:.1f}", copied / copy_seconds, load_average()])
            print(f"{name}: {json.dumps(result)} (load {load_average()})", flush=True)
        print(table(["window", "tool calls", "records", "parts", "procs", "s", "records/s",
                     "bundle",
                     "peak RSS MB", "COPY rows", "COPY s", "COPY rows/s", "load after"], rows))

        def rate_of(name: str) -> float:
            return float(results[name]["records"] / results[name]["seconds"])

        graded = "full" if "full" in results else "small"
        rate = rate_of(graded)
        copy_rate = rows[[c[0] for c in cases].index(graded)][11]
        record_figure("export", f"strict JSONL export, unique strings, {graded} window "
                      f"({results[graded]['records']:,} records), records/s", f"{rate:,.0f}",
                      f">= {TARGET_RATE:,}", f"COPY of the tool-call rows {copy_rate:,.0f} "
                      "rows/s", f"{rate / TARGET_RATE:.2f}x target", rate >= TARGET_RATE)
        if "repeated strings" in results:
            same = rate_of("small")
            record_figure("export", "strict export, repeated strings (detector cache), "
                          f"{results['repeated strings']['records']:,} records, records/s",
                          f"{rate_of('repeated strings'):,.0f}", "(none: shows the cache "
                          "effect)", f"unique strings, small window {same:,.0f}/s",
                          f"repeated / unique {rate_of('repeated strings') / same:.2f}x", None)
        if "full" in results:
            ratio = results["full"]["peak_rss_kb"] / results["small"]["peak_rss_kb"]
            record_figure("export", f"peak RSS, full ({results['full']['records']:,} records) / "
                          f"small ({results['small']['records']:,})", f"{ratio:.2f}",
                          f"<= {TARGET_MEMORY_RATIO}",
                          f"small {results['small']['peak_rss_kb'] / 1024:.0f} MB, full "
                          f"{results['full']['peak_rss_kb'] / 1024:.0f} MB",
                          f"{ratio / TARGET_MEMORY_RATIO:.2f}x target",
                          ratio <= TARGET_MEMORY_RATIO)


if __name__ == "__main__":
    main()
