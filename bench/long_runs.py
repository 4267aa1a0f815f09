"""How the API and the timeline page grow with a run's length: 100 to 100,000 records.

    .venv/bin/python -m bench.long_runs [--sizes 100,1000,10000,100000] [--repeat 5]

For each size, one run in ``bench-1`` built by ``bench.run_detail.big_run`` with about that
many records (tool calls = size / 1.1, a step and a model call every 20 tool calls, a failed
call retried every 10), ingested as ``split_run`` parts through ``ingest_batch``. Then, through
the Django test Client in-process (server time), median ms, bytes and SQL queries of:

- ``GET /api/v1/runs/<run_id>/`` (API key, ``view_ledger``): whole up to 2,000 records, then
  the first 2,000 and ``timeline_next``;
- the whole run through the records cursor (``/records/?limit=2000``, following ``next``):
  total ms, bytes and queries of the walk, and its number of requests;
- ``GET /runs/<tenant>/<run_id>/`` as a staff user with ``view_ledger`` (strict): whole up to
  2,000 records, then each step with its first calls (``runs.timeline``);
- one step's calls not shown (the page's first "more" link, ``fragment=1``), when there is one;
- an agent recording as it goes: the run is ingested still running, then ``--repeat`` batches of
  one new step and one tool call in it are appended through ``ingest_batch`` (median ms), then
  a last batch closes it before the reads above. An append read every stored step of its run
  until ddf47ac (457 ms at 10,000 steps).

No target of its own (the targets are ``bench.run_detail``'s and ``bench.timeline_page``'s):
every figure goes through ``record_figure`` ungraded, with the load average. Small data, no
background runs: what grows here is the run, not the table around it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

import orjson

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    record_figure,
    table,
    time_calls,
)
from bench.run_detail import big_run, ingest_run

_ROW = re.compile(rb'<tr id="[^"]*" class="kind-')
_MORE = re.compile(rb'<a class="more-calls-link" href="([^"]+)"')


def measured(client: Any, url: str, repeat: int, warmup: int) -> tuple[float, int, int, bytes]:
    """Median ms, bytes and queries of ``GET url`` (200 required), and the last body."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    answer = client.get(url)
    if answer.status_code != 200:
        sys.exit(f"GET {url}: HTTP {answer.status_code} {answer.content[:300]!r}")
    timing = time_calls(lambda: client.get(url), repeat, warmup)
    with CaptureQueriesContext(connection) as captured:
        body = client.get(url).content
    return timing.median, len(body), len(captured), body


def cursor_walk(client: Any, run_id: str) -> tuple[float, int, int, int, int]:
    """The whole run through the records cursor: ms, bytes, queries, requests, records."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    url: str | None = f"/api/v1/runs/{run_id}/records/?limit=2000"
    size = requests = records = 0
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        for _ in range(10_000):  # bounded
            if url is None:
                break
            answer = client.get(url)
            assert answer.status_code == 200, answer.content[:300]
            page = orjson.loads(answer.content)
            size += len(answer.content)
            requests += 1
            records += len(page["results"])
            url = page["next"]
    return ((time.perf_counter() - started) * 1000, size, len(captured), requests, records)


def appends(tenant: Any, run: dict[str, Any], repeat: int, warmup: int) -> float:
    """Median ms of appending one step and one tool call in it to the running ``run``."""
    from datetime import UTC, datetime, timedelta

    from runs.ingest_schema import parse_batch
    from runs.services import ingest_batch

    header = {k: v for k, v in run.items()
              if k not in ("steps", "model_calls", "tool_calls", "annotations")}
    call = run["tool_calls"][0]
    later = datetime(2026, 12, 1, tzinfo=UTC)
    batches = []
    for i in range(warmup + repeat):
        at = (later + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
        step_id = f"appended-{i}"
        batches.append(parse_batch({"runs": [{
            **header, "model_calls": [], "annotations": [],
            "steps": [{"step_id": step_id, "index": 100_000 + i, "title": "appended",
                       "status": "succeeded", "started_at": at, "ended_at": at}],
            "tool_calls": [{**call, "call_id": f"{run['run_id']}-appended-{i}",
                            "step_id": step_id, "retry_of": None, "attempt": 1,
                            "started_at": at, "ended_at": at}]}]}))
    times = []
    for i, batch in enumerate(batches):
        started = time.perf_counter()
        ingest_batch(tenant, batch, recorded_by="bench")
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,1000,10000,100000",
                        help="records per run, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    add_db_arguments(parser, "long_runs")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]

    with bench_database(args) as db:
        from django.db import connection
        from django.test import Client

        from bench.timeline_page import staff_viewer
        from core.models import Tenant
        from core.services import issue_api_key
        from runs.models import Run

        print(environment_line(db), flush=True)
        tenant, _ = Tenant.objects.get_or_create(slug="bench-1", defaults={"name": "bench-1"})
        _, key = issue_api_key(tenant, "bench-reader", ["view_ledger"])
        api = Client(HTTP_HOST="localhost", headers={"Authorization": f"Bearer {key}"})
        page_client = Client(HTTP_HOST="localhost")
        page_client.force_login(staff_viewer(tenant))
        rows: list[list[Any]] = []
        for size in sizes:
            tool_calls = max(10, round(size / 1.1))
            run = big_run("bench-1", tool_calls, steps=max(1, tool_calls // 20))
            closing = {"status": run["status"], "ended_at": run["ended_at"]}
            run["status"], run["ended_at"] = "running", None
            started = time.perf_counter()
            ingest_run(tenant, run)
            append_ms = appends(tenant, run, args.repeat, args.warmup)
            ingest_run(tenant, {**run, **closing, "steps": [], "model_calls": [],
                                "tool_calls": [], "annotations": []})
            with connection.cursor() as cursor:
                for name in ("runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation"):
                    cursor.execute(f"VACUUM ANALYZE {name}")
            records = Run.objects.get(tenant=tenant, run_id=run["run_id"]).last_seq
            print(f"{records:,} records ({tool_calls:,} tool calls) ingested in "
                  f"{time.perf_counter() - started:.1f} s; load average {load_average()}",
                  flush=True)
            repeat = args.repeat if records <= 20_000 else max(1, args.repeat // 2)
            detail = measured(api, f"/api/v1/runs/{run['run_id']}/", repeat, args.warmup)
            walk = cursor_walk(api, run["run_id"])
            assert walk[4] == records, (walk[4], records)
            page = measured(page_client, f"/runs/bench-1/{run['run_id']}/", repeat,
                            args.warmup)
            shown = len(_ROW.findall(page[3]))
            links = _MORE.findall(page[3])
            fragment = (measured(page_client, links[0].decode().replace("&amp;", "&")
                                 + "&fragment=1", repeat, args.warmup) if links else None)
            rows.append([f"{records:,}", append_ms, detail[0], detail[1] // 1024, detail[2],
                         walk[0], walk[1] // 1024, walk[2], walk[3], page[0], page[1] // 1024,
                         page[2], shown, fragment[0] if fragment else "", fragment[1] // 1024
                         if fragment else ""])
            record_figure("long_runs", f"append of a step and a call to the running run, "
                          f"{records:,} records", f"{append_ms:.1f} ms", "(none: growth)", "-",
                          "-", None)
            for label, (ms, size_b, queries) in (
                    ("run detail", detail[:3]), ("records cursor, whole run", walk[:3]),
                    ("timeline page", page[:3])):
                record_figure("long_runs", f"{label}, {records:,} records",
                              f"{ms:.0f} ms, {size_b / 1024:,.0f} KB, {queries} queries",
                              "(none: growth)", "-", "-", None)
        print(f"\nload average {load_average()}")
        print(table(["records", "append ms", "detail ms", "KB", "q", "cursor walk ms", "KB", "q",
                     "requests", "page ms", "KB", "q", "rows", "fragment ms", "KB"], rows))


if __name__ == "__main__":
    main()
