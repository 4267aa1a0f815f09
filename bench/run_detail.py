"""Run detail through the API: a run with 1,000 tool calls and its whole timeline.

    .venv/bin/python -m bench.run_detail
    .venv/bin/python -m bench.run_detail --profile

Target: ``GET /api/v1/runs/<run_id>/`` of a run with 1,000 tool calls in a median under 50 ms
(server time, Django test Client in-process) with at most 10 SQL queries.

Loads background data (``--background`` tool calls, default 50,000, over two tenants, through
``bench.generate.load``), then one run in the first tenant with exactly ``--tool-calls``
(1,000) tool calls over 50 steps, each step with one model call and a retried failure every
10 calls; it is over the 1,000-record batch limit, so it goes in as ``split_run`` parts through
``ingest_batch``. Then ``--warmup`` (3) and ``--repeat`` (30) GETs with a ``view_ledger`` API key;
median/p95 ms and the query count of one more request under ``CaptureQueriesContext``.

Baseline in the same run: the same rows fetched with one raw SQL query per table (run, steps,
model calls, tool calls, annotations) on a plain psycopg connection, merged by ``seq``, each row
redacted by the reader's ``redactor_for(...).redact_row`` (what the API applies: strict
redaction, hashes replaced by commitments), then ``orjson.dumps``-ed. The baseline's JSON must
equal the API's; when it does not, the first difference is printed and no ratio is reported.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from bench._common import (
    CollectorTime,
    add_db_arguments,
    as_web_worker,
    bench_database,
    environment_line,
    load_average,
    profile_call,
    record_figure,
    table,
    time_calls,
)
from bench.generate import split_run
from runs.sample_runs import big_run

TARGET_MS = 50.0
TARGET_QUERIES = 10
TENANTS = ["bench-1", "bench-2"]


def ingest_run(tenant: Any, run: dict[str, Any]) -> int:
    from runs.ingest_schema import parse_batch
    from runs.services import ingest_batch

    parts = list(split_run(run, 1000))
    for part in parts:
        ingest_batch(tenant, parse_batch({"runs": [part]}), recorded_by="bench")
    return len(parts)


# -- baseline --------------------------------------------------------------------------------

RUN_SQL = """
SELECT r.id, r.run_id, t.slug AS tenant, a.agent_id, r.goal, r.trigger_ref, r.status,
       r.started_at, r.ended_at, rp.run_id AS replay_of, r.metadata, r.last_seq, r.head_hash,
       r.recorded_at
FROM runs_run r
JOIN ledger_portal_tenant t ON t.id = r.tenant_id
JOIN runs_agent a ON a.id = r.agent_id
LEFT JOIN runs_run rp ON rp.id = r.replay_of_id
WHERE r.tenant_id = %s AND r.run_id = %s"""
# The columns of runs.api.presenters' *_FIELDS, in plain SQL: what the API reads. A step's and
# a retried call's external ids come from the run's own rows (a join by id alone would probe
# every month's partition of a partitioned table for each row).
RUN_STEPS = "(SELECT id, step_id FROM runs_step WHERE run_id = %(run)s)"
TIMELINE_SQL = {
    "step": """
SELECT seq, step_id, index, title, status, started_at, ended_at, metadata, content_hash,
       chain_hash
FROM runs_step WHERE run_id = %(run)s AND tenant_id = %(tenant)s""",
    "model_call": """
SELECT m.seq, m.call_id, s.step_id, m.provider, m.model, m.messages, m.response, m.request,
       m.input_tokens, m.output_tokens, m.latency_ms, m.started_at, m.ended_at, m.error,
       m.classifications, m.content_hash, m.chain_hash
FROM runs_modelcall m LEFT JOIN """ + RUN_STEPS + """ s ON s.id = m.step_id
WHERE m.run_id = %(run)s AND m.tenant_id = %(tenant)s""",
    "tool_call": """
SELECT c.seq, c.call_id, r.run_id, s.step_id, t.name AS tool, c.action_class, c.input,
       c.output, c.status, c.error, c.attempt, o.call_id AS retry_of, c.started_at, c.ended_at,
       c.duration_ms, c.idempotency_key, c.supports_rollback, c.classifications,
       c.tool_call_ref, c.content_hash, c.chain_hash
FROM runs_toolcall c
JOIN runs_run r ON r.id = c.run_id
LEFT JOIN """ + RUN_STEPS + """ s ON s.id = c.step_id
JOIN runs_tool t ON t.id = c.tool_id
LEFT JOIN (SELECT id, call_id FROM runs_toolcall WHERE run_id = %(run)s) o
  ON o.id = c.retry_of_id
WHERE c.run_id = %(run)s AND c.tenant_id = %(tenant)s""",
    "annotation": """
SELECT seq, annotation_id, annotation_kind, target_call_id, body, data, author_label,
       recorded_at, content_hash, chain_hash
FROM runs_annotation WHERE run_id = %(run)s AND tenant_id = %(tenant)s""",
}


def baseline_body(conn: Any, tenant_id: int, run_id: str, redact: Any) -> bytes:
    """The API's answer by hand: one query per table, merged by seq, every row through the
    same ``redact(kind, row)`` the API applies (``ViewerRedaction.redact_row``: the viewer's
    redaction, hashes replaced by commitments), then ``orjson.dumps``."""
    cur = conn.cursor()
    cur.execute(RUN_SQL, [tenant_id, run_id])
    names = [d.name for d in cur.description]
    run = dict(zip(names, cur.fetchone(), strict=True))
    pk = run.pop("id")
    run = redact("run", run)
    timeline: list[dict[str, Any]] = []
    for kind, sql in TIMELINE_SQL.items():
        cur.execute(sql, {"run": pk, "tenant": tenant_id})
        names = [d.name for d in cur.description]
        for values in cur.fetchall():
            row = dict(zip(names, values, strict=True))
            row["kind"] = kind
            timeline.append(row)
    timeline.sort(key=lambda row: row["seq"])
    run["timeline"] = [redact(row["kind"], row) for row in timeline]
    run["timeline_next"] = None  # the whole timeline (a run of up to 2,000 records)
    return orjson.dumps(run, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z)


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if type(a) is not type(b):
        return f"{path or '.'}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        for key in sorted(a.keys() | b.keys()):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'API' if key in a else 'baseline'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {a!r} vs {b!r}"


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=1000,
                        help="tool calls in the measured run")
    parser.add_argument("--background", type=int, default=50_000,
                        help="tool calls of other runs, over two tenants")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one API request (top by cumulative and by tottime)")
    parser.add_argument("--reuse-db", action="store_true",
                        help="measure in an existing database (kept), e.g. the 10,000,000 "
                        "tool calls bench.admin_changelist --copy leaves: its tool calls are "
                        "the background, and the measured run is added once")
    add_db_arguments(parser, "run_detail")
    args = parser.parse_args(argv)

    with bench_database(args, reuse=args.reuse_db) as db:
        import psycopg
        from django.db import connection
        from django.test import Client
        from django.test.utils import CaptureQueriesContext
        from psycopg.types.json import set_json_loads

        from bench.generate import load
        from core.actors import ApiKeyPrincipal
        from core.models import Tenant
        from core.services import issue_api_key
        from runs.models import Run, ToolCall
        from runs.services import redactor_for

        print(environment_line(db), flush=True)
        if db.created:
            totals = load(TENANTS, args.background, args.seed, progress=sys.stderr.isatty())
        else:  # what the reused database holds is the background
            totals = {"tool_calls": ToolCall.objects.count(), "runs": Run.objects.count()}
        tenant = Tenant.objects.get(slug=TENANTS[0])
        run = big_run(TENANTS[0], args.tool_calls)
        stored = Run.objects.filter(tenant=tenant, run_id=run["run_id"]).first()
        parts = 0
        if stored is None:
            parts = ingest_run(tenant, run)
            with connection.cursor() as cursor:
                for name in ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall",
                             "runs_annotation"):
                    cursor.execute(f"VACUUM ANALYZE {name}")
            stored = Run.objects.get(tenant=tenant, run_id=run["run_id"])
        print(f"data: background {totals.get('tool_calls', 0):,} tool calls in "
              f"{totals.get('runs', 0):,} runs; measured run {run['run_id']}: "
              f"{len(run['tool_calls']):,} tool calls, {len(run['steps'])} steps, "
              f"{len(run['model_calls'])} model calls, last_seq {stored.last_seq:,} "
              + (f"(ingested as {parts} batches)" if parts else "(already in the database)"))

        key_row, key = issue_api_key(tenant, "bench-reader", ["view_ledger"])
        client = Client(HTTP_HOST="localhost", headers={"Authorization": f"Bearer {key}"})
        url = f"/api/v1/runs/{run['run_id']}/"
        response = client.get(url)
        if response.status_code != 200:
            sys.exit(f"GET {url}: HTTP {response.status_code} {response.content[:300]!r}")
        api_doc = orjson.loads(response.content)
        n_timeline = len(api_doc["timeline"])
        n_tool_calls = sum(1 for e in api_doc["timeline"] if e["kind"] == "tool_call")
        assert n_tool_calls == args.tool_calls, n_tool_calls

        def get() -> None:
            assert client.get(url).status_code == 200

        print(as_web_worker(), flush=True)
        with CollectorTime() as collecting:
            api = time_calls(get, args.repeat, max(0, args.warmup - 1))
        print(f"garbage collection during the API requests: "
              f"{collecting.line(args.repeat + max(0, args.warmup - 1))}", flush=True)
        with CaptureQueriesContext(connection) as captured:
            get()
        sql_ms = sum(float(q["time"]) for q in captured.captured_queries) * 1000

        reader = ApiKeyPrincipal(key_row)

        def baseline() -> bytes:  # the reader's redaction made per request, as the API does
            redact = redactor_for(reader, tenant.pk).redact_row
            return baseline_body(raw, tenant.pk, run["run_id"], redact)

        with psycopg.connect(db.url) as raw:
            set_json_loads(orjson.loads, raw)
            diff = first_difference(api_doc, orjson.loads(baseline()))
            base = time_calls(baseline, args.repeat, args.warmup)

        print(f"GET {url}: {len(response.content) / 1024:,.0f} KB, {n_timeline:,} timeline "
              f"entries ({n_tool_calls:,} tool calls); {args.warmup} warm-ups + "
              f"{args.repeat} requests; load average {load_average()}\n")
        print(table(
            ["path", "median ms", "p95 ms", "min ms", "queries", "sql ms"],
            [["API (test Client, API key)", api.median, api.p95, api.minimum, len(captured),
              sql_ms],
             ["baseline: raw SQL per table + the API's redaction + orjson", base.median,
              base.p95, base.minimum, 1 + len(TIMELINE_SQL), ""]]))
        # A ratio against a baseline that does less (or other) work says nothing: only when
        # both produce the same document is it reported.
        same = diff is None
        print(f"\nbaseline JSON equals the API's: "
              f"{'yes' if same else 'NO, first difference at ' + str(diff)}")
        ratio = f"{api.median / base.median:.1f}x" if same else "none (outputs differ)"
        base_text = f"{base.median:.1f} ms" if same else "not comparable"
        record_figure("run_detail", f"GET /api/v1/runs/<id>/, {n_tool_calls:,} tool calls, "
                      "median", f"{api.median:.1f} ms", f"< {TARGET_MS:.0f} ms", base_text,
                      ratio, api.median < TARGET_MS)
        record_figure("run_detail", "queries of one request", str(len(captured)),
                      f"<= {TARGET_QUERIES}", "-", "-", len(captured) <= TARGET_QUERIES)
        print("queries of the captured request:")
        for q in captured.captured_queries:
            print(f"  {float(q['time']) * 1000:7.1f} ms  {q['sql'][:110]}")

        if args.profile:
            print("\n== cProfile: one API request (top by cumulative)")
            print(profile_call(get, top=40))
            print("== cProfile: one API request (top by tottime)")
            print(profile_call(get, top=20, sort="tottime"))


if __name__ == "__main__":
    main()
