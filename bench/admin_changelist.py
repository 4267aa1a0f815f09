"""The admin tool-call changelist over 1,000,000 tool calls.

    .venv/bin/python -m bench.admin_changelist --keep            # load 1M, measure, keep the DB
    .venv/bin/python -m bench.admin_changelist --reuse-db         # measure again, no loading

Target: every case's median under 300 ms (server time, Django test Client in-process).

Loads ``--tool-calls`` (default 1,000,000) across two tenants through the ingestion service
(``bench.generate.load``, ~10k tool calls/s), then VACUUM ANALYZE. As (a) a superuser and (b) a
staff user holding ``view_ledger`` on one of the two tenants, requests ``/admin/runs/toolcall/``
plain, ``?status=failed``, ``?action_class=exfil``, ``?q=<an existing run_id>`` and ``?p=50``:
``--warmup`` (2) then ``--repeat`` (20) requests each; median/p95 ms, then one more request
under ``CaptureQueriesContext`` for the query count and the SQL time. Baseline in the same run:
``SELECT <all columns> FROM runs_toolcall ORDER BY id DESC LIMIT 100`` through the cursor (and
the same at page 50's OFFSET).

``--explain`` prints EXPLAIN ANALYZE of each case's slowest query; ``--profile CASE`` cProfiles
one request of that case (as the staff user, or ``--profile-user super``).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    profile_call,
    table,
    time_calls,
    verdict,
)

URL = "/admin/runs/toolcall/"
TARGET_MS = 300.0
TENANTS = ["bench-1", "bench-2"]


def ensure_data(tool_calls: int, seed: int) -> str:
    from django.db import connection

    from bench.generate import load
    from runs.models import ToolCall

    have = ToolCall.objects.count()
    if have >= tool_calls:
        return f"reused: {have:,} tool calls already loaded"
    if have:
        sys.exit(f"the database holds {have:,} of {tool_calls:,} tool calls; run without "
                 "--reuse-db to load it afresh")
    started = time.perf_counter()
    totals = load(TENANTS, tool_calls, seed, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        for name in ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall",
                     "runs_annotation"):
            cursor.execute(f"VACUUM ANALYZE {name}")
    return (f"loaded {totals.get('tool_calls', 0):,} tool calls ({sum(totals.values()):,} "
            f"records) in {seconds:,.0f} s = {totals.get('tool_calls', 0) / seconds:,.0f} "
            "tool calls/s through ingest_batch, then VACUUM ANALYZE")


def users() -> dict[str, Any]:
    from django.contrib.auth import get_user_model

    from core.models import Tenant
    from core.services import grant_role

    user_model = get_user_model()
    superuser, _ = user_model.objects.get_or_create(
        username="bench-super", defaults={"is_staff": True, "is_superuser": True})
    staff, _ = user_model.objects.get_or_create(username="bench-staff",
                                                defaults={"is_staff": True})
    grant_role(staff, "view_ledger", Tenant.objects.get(slug=TENANTS[0]))
    return {"superuser": superuser, f"staff (view_ledger on {TENANTS[0]})": staff}


def a_run_id() -> str:
    """A run of the first tenant, from the middle of the table."""
    from runs.models import Run

    runs = Run.objects.filter(tenant__slug=TENANTS[0]).order_by("pk")
    return str(runs.values_list("run_id", flat=True)[runs.count() // 2])


def cases(run_id: str) -> list[tuple[str, str]]:
    return [("plain", URL), ("status=failed", f"{URL}?status=failed"),
            ("action_class=exfil", f"{URL}?action_class=exfil"),
            ("q=<run_id>", f"{URL}?q={run_id}"), ("page 50", f"{URL}?p=50")]


_ROW = re.compile(rb'class="field-call_id"')


def shown_rows(content: bytes) -> int:
    return len(_ROW.findall(content))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--reuse-db", action="store_true",
                        help="reuse the database if it exists (no loading when it already holds "
                        "the tool calls); implies --keep")
    parser.add_argument("--explain", action="store_true",
                        help="EXPLAIN ANALYZE each case's slowest query")
    parser.add_argument("--profile", metavar="CASE",
                        help="cProfile one request of CASE (plain, status=failed, ...)")
    parser.add_argument("--profile-user", choices=["staff", "super"], default="staff")
    add_db_arguments(parser, "admin")
    args = parser.parse_args(argv)
    if args.reuse_db:
        args.keep = True

    with bench_database(args, reuse=args.reuse_db) as db:
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext

        from runs.models import Run, ToolCall

        print(environment_line(db), flush=True)
        print(ensure_data(args.tool_calls, args.seed))
        total = ToolCall.objects.count()
        print(f"data: {total:,} tool calls, {Run.objects.count():,} runs in "
              f"{len(TENANTS)} tenants; {args.warmup} warm-ups + {args.repeat} requests each")
        run_id = a_run_id()

        rows: list[list[Any]] = []
        explains: list[str] = []
        medians: list[float] = []
        for label, user in users().items():
            client = Client(HTTP_HOST="localhost")
            client.force_login(user)
            for name, url in cases(run_id):
                response = client.get(url)
                if response.status_code != 200:
                    sys.exit(f"{label} {url}: HTTP {response.status_code}")
                shown = shown_rows(response.content)
                if name == "q=<run_id>" and run_id.encode() not in response.content:
                    sys.exit(f"{label} {url}: the run is not in the page")

                def get(url: str = url, client: Any = client) -> None:
                    assert client.get(url).status_code == 200

                timing = time_calls(get, args.repeat, max(0, args.warmup - 1))
                with CaptureQueriesContext(connection) as captured:
                    get()
                sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000
                medians.append(timing.median)
                rows.append([label if name == "plain" else "", name, shown, timing.median,
                             timing.p95, len(captured), sql_ms,
                             verdict(timing.median < TARGET_MS)])
                if args.explain:
                    slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
                    explains.append(explain(label, name, slowest["sql"]))
                if args.profile == name and (args.profile_user == "super") == (
                        label == "superuser"):
                    print(f"\n== cProfile: {label} {url} (top by cumulative)")
                    print(profile_call(get, top=45))

        def select(sql: str) -> Any:
            def run() -> None:
                with connection.cursor() as cursor:
                    cursor.execute(sql)
                    cursor.fetchall()
            return run

        cols = ", ".join(str(f.column) for f in ToolCall._meta.concrete_fields)
        for name, sql in (
                ("LIMIT 100", f"SELECT {cols} FROM runs_toolcall ORDER BY id DESC LIMIT 100"),
                ("OFFSET 4900 LIMIT 100", f"SELECT {cols} FROM runs_toolcall ORDER BY id DESC "
                 "LIMIT 100 OFFSET 4900")):
            timing = time_calls(select(sql), args.repeat, args.warmup)
            rows.append(["baseline: raw cursor" if name == "LIMIT 100" else "", name, 100,
                         timing.median, timing.p95, 1, "", ""])
            if name == "LIMIT 100":
                baseline = timing.median

        print()
        print(table(["user", "case", "rows", "median ms", "p95 ms", "queries", "sql ms",
                     f"< {TARGET_MS:.0f} ms"], rows))
        worst = max(medians)
        print(f"\nslowest case median {worst:.1f} ms ({worst / baseline:,.0f}x the bare "
              f"SELECT's {baseline:.1f} ms); target: every median < {TARGET_MS:.0f} ms: "
              f"{verdict(worst < TARGET_MS)}")
        print("(sql ms: the database time of one captured request, included in its median)")
        for text in explains:
            print(text)


def explain(label: str, case: str, sql: str, max_lines: int = 40) -> str:
    from django.db import connection

    # The paginator's own planner estimate is itself an EXPLAIN: analyze what it estimates.
    sql = re.sub(r"^EXPLAIN \(FORMAT JSON\) ", "", sql)
    if not sql.lstrip().upper().startswith("SELECT"):
        return f"\n== {label} / {case}: slowest query (not a SELECT)\n  {sql}"
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
        lines = [r[0] for r in cursor.fetchall()]
    if len(lines) > max_lines:
        lines = [*lines[:max_lines - 3], "...", *lines[-2:]]
    plan = "\n".join(f"    {line}" for line in lines)
    short = re.sub(r"^SELECT .*? FROM ", "SELECT ... FROM ", sql, count=1)
    short = re.sub(r'IN \(SELECT V0\."id" AS "pk" FROM "ledger_portal_tenant" V0 .*?\)\)\)\)',
                   "IN (<tenants_for(user, view_ledger)>)", short)
    return f"\n== {label} / {case}: slowest query\n  {short}\n{plan}"


if __name__ == "__main__":
    main()
