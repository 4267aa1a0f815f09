"""Retention at scale: past months removed by dropping their partitions, beside the run-by-run
removal of the same ledger in the same run (PostgreSQL).

    .venv/bin/python -m bench.retention [--tool-calls 200000] [--recorded-over-days 90]
                                        [--copy-jobs 2] [--profile] [--keep]

Data: ``--tool-calls`` over two tenants (``bench-a``, ``bench-b``, both keeping records 30 days)
through the COPY generator, stored over the last ``--recorded-over-days`` days, so the records
lie in that many days' month partitions. The generator leaves one run in ten running; they are
closed through ``ingest_batch`` (a closing status note each, as an agent closes a run), since
an open run keeps its month. Retention is then asked about a moment 31 days after the last run
ended: every run is due, and every past month ends before the cutoff.

Then, on two identical databases (the second made from the first as a template):

1. **months whole** (graded): ``runs.tasks.apply_retention``, the hourly task: the past months
   go whole (``runs.retention_months``), then the run-by-run removal takes what is left (runs
   stored this month only). Graded: every month weighed went whole, and the ledger verifies;
2. **run by run** (the baseline): the same task with the months left out
   (``remove_due_months`` not called): every run's rows deleted under its removal record.

Each prints wall time, records removed and records/s, the record tables' size before and after
(a dropped partition frees its files at once; deleted rows leave dead space for VACUUM), and
the load average.

**A live writer** (``--no-live-writer`` leaves it out): during each pass a process of its own
stores one generated run at a time (23 records on average, through ``ingest_batch``) for a third
tenant, ``bench-live``, which keeps its records, as a portal's agents go on storing while the
hourly task runs. Its stores' times during each pass are printed: a dropped partition holds
its table's lock until commit, and a store waits for it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    profile_call,
    record_figure,
)

TENANTS = ["bench-a", "bench-b"]
LIVE_TENANT = "bench-live"  # keeps its records; stores while the passes run
RETENTION_DAYS = 30
BENCH = "retention"
RECORD_TABLES = ("runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation")


def close_open_runs() -> int:
    """Close the generator's running runs as an agent would: a header-only part with the final
    status (ingestion chains the closing note)."""
    from django.utils import timezone

    from core.models import Tenant
    from runs.annotations import GOVERNANCE_RUN_ID
    from runs.ingest import ingest_batch
    from runs.ingest_schema import parse_batch
    from runs.models import Run

    closed = 0
    for tenant in Tenant.objects.filter(slug__in=TENANTS):
        running = list(Run.objects.filter(tenant=tenant, status="running")
                       .exclude(run_id=GOVERNANCE_RUN_ID).select_related("agent"))
        for start in range(0, len(running), 500):
            parts = [{"run_id": run.run_id, "agent_id": run.agent.agent_id, "goal": run.goal,
                      "started_at": run.started_at.isoformat(), "metadata": run.metadata,
                      "trigger_ref": run.trigger_ref, "status": "succeeded",
                      # the generator's clock runs ahead of now on a big load
                      "ended_at": max(timezone.now(), run.started_at
                                      + timedelta(seconds=1)).isoformat()}
                     for run in running[start:start + 500]]
            ingest_batch(tenant, parse_batch({"runs": parts}), recorded_by="bench")
            closed += len(parts)
    return closed


def record_bytes() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                       "WHERE c.relname ~ %s AND c.relkind = 'r'",
                       [f"^({'|'.join(RECORD_TABLES)})(_p[0-9]{{6}}|_default|_keys)$"])
        return int(cursor.fetchone()[0] or 0)


def ledger_rows() -> int:
    from runs.integrity import RECORD_MODELS
    from runs.models import Run

    return sum(model.objects.count() for model in RECORD_MODELS) + Run.objects.count()


def signed_away() -> int:
    """Rows the signed removal records account for (run rows included)."""
    from django.db.models import Sum

    from runs.models import RemovalRecord

    return RemovalRecord.objects.aggregate(n=Sum("records"))["n"] or 0


def retention_pass(now: datetime, months: bool) -> dict[str, Any]:
    """The hourly task's work at ``now``, with or without the months."""
    from core.models import Tenant
    from runs.retention import apply_retention
    from runs.retention_months import remove_due_months

    before_rows, before_bytes = signed_away(), record_bytes()
    started = time.perf_counter()
    weighed = remove_due_months(now) if months else []
    for tenant in Tenant.objects.filter(slug__in=TENANTS):
        apply_retention(tenant, now, months=False)
    seconds = time.perf_counter() - started
    removed = signed_away() - before_rows
    return {"seconds": seconds, "removed": removed, "rate": removed / seconds,
            "bytes": (before_bytes, record_bytes()), "months": weighed}


def verifies() -> bool:
    from core.models import Tenant
    from runs.integrity import verify_tenant

    return all(verify_tenant(tenant).intact for tenant in Tenant.objects.filter(
        slug__in=TENANTS))


def write_live(out_path: str) -> None:
    """The live writer's loop (its own process, Django set up from the environment): store one
    generated run at a time for ``LIVE_TENANT`` until SIGTERM; a line per store to
    ``out_path``: when it started (epoch seconds) and how long it took."""
    import django

    django.setup()
    from core.models import Tenant
    from runs.ingest_schema import parse_batch
    from runs.sample_runs import generate_runs
    from runs.services import ingest_batch

    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    tenant = Tenant.objects.get(slug=LIVE_TENANT)
    with open(out_path, "a", encoding="utf-8") as out:
        for run in generate_runs(LIVE_TENANT, 10**9, seed=os.getpid()):
            if stopping:
                break
            started, clock = time.time(), time.perf_counter()
            ingest_batch(tenant, parse_batch({"runs": [run]}), recorded_by="bench-live")
            out.write(f"{started:.6f} {time.perf_counter() - clock:.6f}\n")
            out.flush()


class LiveWriter:
    """``write_live`` in a process of its own, started and stopped around one pass."""

    def __init__(self, database_url: str, out_path: Path) -> None:
        self.database_url, self.out_path = database_url, out_path

    def __enter__(self) -> LiveWriter:
        self.out_path.write_text("")
        env = {**os.environ, "DATABASE_URL": self.database_url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.retention", "--live-writer-out", str(self.out_path)],
            env=env)
        deadline = time.monotonic() + 60
        while len(self._stores()) < 3:  # storing steadily before the pass begins
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the live writer did not start storing")
            time.sleep(0.1)
        self.started = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.ended = time.time()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=600)

    def _stores(self) -> list[tuple[float, float]]:
        # the writer may be in the middle of its last line: whole lines only
        lines = self.out_path.read_text(encoding="utf-8").split("\n")[:-1]
        return [(float(a), float(b)) for a, b in (line.split() for line in lines)]

    def during(self) -> list[float]:
        """The seconds of each store that overlapped the pass."""
        return [took for start, took in self._stores()
                if start + took >= self.started and start <= self.ended]


def stores_line(stores: list[float]) -> str:
    if not stores:
        return "no store"
    return (f"{len(stores)} stores, median {statistics.median(stores) * 1000:,.0f} ms, "
            f"longest {max(stores):.2f} s")


def use_database(name: str) -> None:
    from django.db import connections

    connections.close_all()
    connections["default"].settings_dict["NAME"] = name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=200_000)
    parser.add_argument("--recorded-over-days", type=int, default=90)
    parser.add_argument("--copy-jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the months-whole pass (top 40 by cumulative time)")
    parser.add_argument("--no-live-writer", dest="live_writer", action="store_false",
                        help="no process storing runs during the passes")
    parser.add_argument("--live-writer-out", help=argparse.SUPPRESS)  # the writer's own run
    add_db_arguments(parser, BENCH)
    args = parser.parse_args(argv)
    if args.live_writer_out:
        write_live(args.live_writer_out)
        return

    with bench_database(args) as db:
        from django.db import connection
        from django.db.models import Max
        from django.utils import timezone

        from core.models import Tenant
        from runs.models import Run
        from runs.sample_copy import copy_load_parallel

        print(environment_line(db), flush=True)
        started = time.perf_counter()
        copy_load_parallel(TENANTS, args.tool_calls, args.seed, args.copy_jobs,
                           progress=sys.stderr.isatty(),
                           recorded_over_days=args.recorded_over_days)
        closed = close_open_runs()
        Tenant.objects.filter(slug__in=TENANTS).update(retention_days=RETENTION_DAYS)
        Tenant.objects.get_or_create(slug=LIVE_TENANT, defaults={"name": "Bench live"})
        with connection.cursor() as cursor:
            for table in ("runs_run", *RECORD_TABLES):
                cursor.execute(f"VACUUM ANALYZE {table}")
        last_end = Run.objects.aggregate(last=Max("ended_at"))["last"]
        now = max(timezone.now(), last_end) + timedelta(days=RETENTION_DAYS + 1)
        print(f"data: {ledger_rows():,} rows ({Run.objects.count():,} runs, {closed:,} closed "
              f"by the bench) loaded in {time.perf_counter() - started:,.0f} s; records "
              f"{record_bytes() / 2**20:,.0f} MiB; retention asked at {now:%Y-%m-%d}; load "
              f"average {load_average()}", flush=True)

        copy = f"{db.name}_rows"
        use_database(db.name)  # closed: a template has no other session
        with db.admin_connect() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{copy}"')
            admin.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{db.name}"')
        whole: dict[str, Any] = {}
        writer_out = Path(args.data_dir) / "retention-live-writer.txt"

        def writing(name: str) -> Any:
            url = db.url.rsplit("/", 1)[0] + f"/{name}"
            return LiveWriter(url, writer_out) if args.live_writer else contextlib.nullcontext()

        try:
            use_database(db.name)
            with writing(db.name) as writer:
                if args.profile:
                    print(profile_call(lambda: whole.update(retention_pass(now, months=True)),
                                       top=40))
                else:
                    whole.update(retention_pass(now, months=True))
            whole["stores"] = writer.during() if writer else []
            whole_intact = verifies()
            use_database(copy)
            with writing(copy) as writer:
                rows = retention_pass(now, months=False)
            rows["stores"] = writer.during() if writer else []
            rows_intact = verifies()
        finally:
            use_database(db.name)
            with db.admin_connect() as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')

        for label, result in (("months whole", whole), ("run by run", rows)):
            before, after = result["bytes"]
            print(f"{label}: {result['removed']:,} rows removed in {result['seconds']:.1f} s "
                  f"= {result['rate']:,.0f} rows/s; record tables {before / 2**20:,.0f} -> "
                  f"{after / 2**20:,.0f} MiB")
            if args.live_writer:
                print(f"  the live writer meanwhile: {stores_line(result['stores'])}")
        for month in whole["months"]:
            print(f"  {month.summary()}")
        went_whole = [m for m in whole["months"] if not m.kept_because]
        record_figure(
            BENCH, f"the hourly task, {whole['removed']:,} rows due, past months whole",
            f"{len(went_whole)} / {len(whole['months'])} months whole, "
            f"{whole['seconds']:.1f} s = {whole['rate']:,.0f} rows/s, "
            f"{(whole['bytes'][0] - whole['bytes'][1]) / 2**20:,.0f} MiB freed",
            "every month weighed goes whole; the ledger verifies",
            f"run by run {rows['seconds']:.1f} s = {rows['rate']:,.0f} rows/s, "
            f"{(rows['bytes'][0] - rows['bytes'][1]) / 2**20:,.0f} MiB freed",
            f"{rows['seconds'] / whole['seconds']:.1f}x faster",
            bool(whole["months"]) and len(went_whole) == len(whole["months"])
            and whole_intact and rows_intact and whole["removed"] == rows["removed"])
        if args.live_writer:
            longest = [max(result["stores"], default=0.0) for result in (whole, rows)]
            record_figure(
                BENCH, "a live writer's stores during the months pass (one run, 23 records on "
                "average, each)", stores_line(whole["stores"]), "-",
                f"during the run-by-run pass: {stores_line(rows['stores'])}",
                f"longest {longest[0] / max(longest[1], 1e-9):.1f}x", None)
        print(f"load average {load_average()}")


if __name__ == "__main__":
    main()
