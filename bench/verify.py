"""``ledger verify``: records/s of what the command really runs, beside a bare hashlib loop.

    .venv/bin/python -m bench.verify --tenant-records 20000,280000     # small + large tenant
    .venv/bin/python -m bench.verify --reuse-db ledger_bench_admin      # the admin bench's 1.8M
    .venv/bin/python -m bench.verify --reuse-db NAME --crossover --skip raw,tx,fetch,decompose

Target (#17): ``ledger verify`` over every tenant at >= 150,000 records/s, every report intact,
graded with ``record_figure``.

Data: ``--tenant-records`` loads one tenant per size (``bench-small``, ``bench-large``: the
auto worker choice differs by size) through ``bench.generate.load`` into a fresh database
(``ledger_bench_verify``, dropped unless ``--keep``); ``--reuse-db NAME`` measures an existing
database (migrated first, kept). ``--seal`` first seals a signed digest per tenant (persisted).

Passes, in this order, each over every tenant:

1. **raw fetch**: the SQL verify streams on PostgreSQL (``runs.integrity_fast``: each record's
   content fields as columns, timestamps already canonical, JSON columns as text) on a plain
   psycopg connection: the database + driver floor.
2. **ledger verify** (graded): the command itself, in process (``ledger_portal.cli.main``,
   local mode, ``--tenant T --quiet``), once per tenant, with its default ``--workers auto``:
   each tenant's record count (from the run rows) picks one process or several
   (``runs.integrity_parallel.choose_workers``); the table shows the choice.
3. **verify_tenant, fixed workers** (``--workers-list``, default ``1,<cores>``): every tenant
   with each count, so the crossover shows: where one process wins (worker start-up) and
   where sharing does. ``--crossover`` repeats this twice and prints the per-size verdict.
4. **verify_tenant in one transaction**: a caller's transaction, which keeps it to one process.
5. **fetch only**: the same queries through verify's own cursor (``integrity_fast._rows``,
   Django's connection, server-side cursors in a transaction), nothing parsed or hashed.
6. **decomposition + bare hashlib** (the baseline): verify's per-record work on that fetch, one
   query at a time in chunks of ``--chunk``, each stage timed alone: fetch; parse
   (``ColumnContent.content``: the columns into a dict, ``orjson.loads`` of each JSON column,
   empty optional fields dropped); canonical bytes (``orjson.dumps`` with
   sorted keys); the bare loop ``hashlib.sha256(b).hexdigest()``; one chain link per record
   (from the stored links, as ``integrity_fast.chain_problem`` checks them). Every recomputed
   hash is checked against the stored one (outside the timing). What is left of the
   single-process pass is verify's own loop: grouping by run, the per-run checks, the merge.

The breakdown ("where the time goes") is set against the **single-process** pass (the stages
are measured in one process; a parallel pass's wall time is not their sum).
``--profile`` cProfiles one single-process ``verify_tenant`` of the largest tenant.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    profile_call,
    record_figure,
    table,
)

TARGET = 150_000  # records/s (#17)
SIZES = ["bench-small", "bench-large"]
RECORDS_PER_TOOL_CALL = 1.8  # bench.generate's mix: runs, steps, model calls, annotations


# -- data --------------------------------------------------------------------------------------


def ensure_data(args: argparse.Namespace, created: bool) -> str:
    from django.db import connection

    from bench.generate import load
    from runs.models import ToolCall

    if not created:
        if not ToolCall.objects.exists():
            sys.exit(f"database {args.db_name} holds no tool calls: nothing to verify")
        return f"reused {args.db_name}"
    sizes = [int(n) for n in args.tenant_records.split(",") if n]
    started = time.perf_counter()
    loaded = 0
    for slug, records in zip(SIZES if len(sizes) == 2 else
                             [f"bench-{i + 1}" for i in range(len(sizes))], sizes, strict=True):
        tool_calls = max(1, round(records / RECORDS_PER_TOOL_CALL))
        totals = load([slug], tool_calls, args.seed, progress=sys.stderr.isatty())
        loaded += sum(totals.values())
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        for name in ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall",
                     "runs_annotation"):
            cursor.execute(f"VACUUM ANALYZE {name}")
    return (f"loaded {loaded:,} records into {len(sizes)} tenants ({args.tenant_records}) in "
            f"{seconds:,.0f} s through ingest_batch, then VACUUM ANALYZE")


def data_line() -> str:
    from django.db import connection

    counts = []
    with connection.cursor() as cursor:
        for name in ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall",
                     "runs_annotation", "runs_tenantdigest"):
            cursor.execute(f"SELECT count(*) FROM {name}")
            counts.append(f"{name[5:]} {cursor.fetchone()[0]:,}")
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        size = cursor.fetchone()[0]
    return "data: " + ", ".join(counts) + f" ({size})"


# -- the SQL verify_tenant streams on PostgreSQL (runs.integrity_fast) -----------------------


@dataclass
class Stream:
    """One query verify runs over a tenant: its run rows, or one record kind's records. Rows
    end with the content fields (from ``offset``), the stored content hash third."""

    name: str
    sql: str
    params: list[Any]
    reader: Any  # integrity_fast.ColumnContent: how verify hashes the content columns
    offset: int
    is_run: bool


def streams(tenant: Any) -> list[Stream]:
    """The run rows and the four record kinds, as ``integrity_fast.verify_scope`` asks for
    them over a whole tenant."""
    from runs import integrity_fast
    from runs.integrity import RECORD_MODELS

    run_sql, run_reader = integrity_fast.runs_sql("t.tenant_id = %s")
    out = [Stream("run", run_sql, [tenant.pk], run_reader, 8, True)]
    where = "t.run_id IN (SELECT id FROM runs_run WHERE tenant_id = %s)"
    for model in RECORD_MODELS:
        sql, reader = integrity_fast.records_sql(model, where)
        out.append(Stream(model._meta.db_table, sql, [tenant.pk], reader, 4, False))
    return out


# -- passes ------------------------------------------------------------------------------------


def pass_cli(tenants: list[Any]) -> dict[str, tuple[int, int, float, bool, int]]:
    """``ledger verify --tenant T --quiet`` in process, per tenant, with its default workers:
    slug -> (runs, records, seconds, intact, workers chosen)."""
    import contextlib
    import io
    import re

    from django.contrib.auth.models import User

    from core.services import grant_role
    from ledger_portal.cli import main
    from runs.integrity_parallel import workers_for

    user, _ = User.objects.get_or_create(username="bench-verifier")
    per = {}
    for tenant in tenants:
        grant_role(user, "view_ledger", tenant)
        chosen = workers_for(tenant)  # what --workers auto picks (verify_tenant asks the same)
        out = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = main(["--local", "--as", user.username, "verify", "--tenant", tenant.slug,
                         "--quiet"])
        seconds = time.perf_counter() - started
        found = re.search(r"(\d+) runs, (\d+) records", out.getvalue())
        if found is None:
            sys.exit(f"ledger verify said: {out.getvalue()!r} (exit {code})")
        per[tenant.slug] = (int(found[1]), int(found[2]), seconds, code == 0, chosen)
        if code != 0:
            print(f"  {tenant.slug}: ledger verify exit {code}: {out.getvalue()[:500]}")
    return per


def pass_verify(tenants: list[Any], in_transaction: bool = False, workers: int = 1
                ) -> dict[str, Any]:
    """verify_tenant over each tenant: per-tenant (report, seconds)."""
    from django.db import transaction

    from runs.integrity import verify_tenant

    per: dict[str, Any] = {}
    for tenant in tenants:
        started = time.perf_counter()
        if in_transaction:
            with transaction.atomic():
                report = verify_tenant(tenant)
        else:
            report = verify_tenant(tenant, workers=workers)
        seconds = time.perf_counter() - started
        per[tenant.slug] = (report, seconds)
        if not report.intact:
            print(f"  {tenant.slug}: NOT intact, {len(report.breaks)} breaks; first: "
                  f"{report.breaks[0]}")
    return per


def pass_fetch_only(tenants: list[Any]) -> tuple[int, float]:
    """What verify_tenant fetches, through its own cursor, nothing parsed or hashed."""
    from django.db import transaction

    from runs.integrity_fast import _rows

    records, started = 0, time.perf_counter()
    with transaction.atomic():  # server-side cursors live in a transaction, as in verify
        for tenant in tenants:
            for stream in streams(tenant):
                for _ in _rows(f"bench_{stream.name}", stream.sql, stream.params):
                    records += 1
    return records, time.perf_counter() - started


def pass_raw_fetch(db_url: str, tenants: list[Any]) -> tuple[int, float]:
    """Verify's SQL on a plain psycopg connection (server-side cursors in one transaction),
    rows as tuples: the database + driver floor."""
    import psycopg

    records = 0
    with psycopg.connect(db_url) as conn:
        started = time.perf_counter()
        for tenant in tenants:
            for stream in streams(tenant):
                with conn.cursor(name=f"bench_raw_{stream.name}") as cur:
                    cur.execute(stream.sql, stream.params)
                    while rows := cur.fetchmany(5000):
                        records += len(rows)
        seconds = time.perf_counter() - started
    return records, seconds


class Stages:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"fetch": 0.0, "parse": 0.0, "canonical": 0.0,
                                          "sha256": 0.0, "chain": 0.0}
        self.records = 0
        self.bytes = 0
        self.mismatches = 0

    def time(self, stage: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        out = fn()
        self.seconds[stage] += time.perf_counter() - started
        return out


def _chunks(it: Iterator[Any], size: int, stages: Stages) -> Iterator[list[Any]]:
    while True:
        started = time.perf_counter()
        chunk = []
        for row in it:
            chunk.append(row)
            if len(chunk) >= size:
                break
        stages.seconds["fetch"] += time.perf_counter() - started
        if not chunk:
            return
        yield chunk


def pass_decomposition(tenants: list[Any], chunk: int) -> Stages:
    """Verify's fetch, parse, canonical bytes, bare sha256, chain links: each stage timed
    alone, on the rows integrity_fast reads."""
    import orjson
    from django.db import transaction

    from core.canonical import GENESIS
    from runs.integrity_fast import _rows

    dumps, sort, sha256 = orjson.dumps, orjson.OPT_SORT_KEYS, hashlib.sha256
    stages = Stages()
    with transaction.atomic():  # verify's server-side cursors live in its transaction
        for tenant in tenants:
            for stream in streams(tenant):
                rows = _rows(f"bench_{stream.name}", stream.sql, stream.params)
                for part in _chunks(rows, chunk, stages):
                    def parse(part: list[tuple[Any, ...]] = part,
                              content: Any = stream.reader.content,
                              offset: int = stream.offset) -> list[Any]:
                        return [content(row[offset:]) for row in part]

                    contents = stages.time("parse", parse)

                    def canonical(contents: list[Any] = contents) -> list[bytes]:
                        return [dumps(content, option=sort) for content in contents]

                    blobs: list[bytes] = stages.time("canonical", canonical)

                    def bare_hash(blobs: list[bytes] = blobs) -> list[str]:
                        return [sha256(b).hexdigest() for b in blobs]

                    hashes = stages.time("sha256", bare_hash)

                    def links(part: list[tuple[Any, ...]] = part, is_run: bool = stream.is_run
                              ) -> None:
                        link = GENESIS
                        for row in part:  # each link from the stored one before it
                            if is_run:
                                sha256(f"{GENESIS}:0:{row[2]}".encode()).hexdigest()
                            else:
                                sha256(f"{link}:{row[1]}:{row[2]}".encode()).hexdigest()
                                link = row[3]

                    stages.time("chain", links)
                    stages.records += len(part)
                    stages.bytes += sum(map(len, blobs))
                    stages.mismatches += sum(1 for row, digest in zip(part, hashes, strict=True)
                                             if row[2] != digest)
    return stages


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse-db", metavar="NAME",
                        help="measure this existing database (migrated first, always kept)")
    parser.add_argument("--tenant-records", default="20000,280000",
                        help="records per tenant to load into a fresh database (two sizes: "
                        "bench-small, bench-large; default %(default)s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--only", default="", help="only these tenants (slugs, comma-separated)")
    parser.add_argument("--workers-list", default=f"1,{os.cpu_count() or 1}",
                        help="fixed worker counts for the verify_tenant passes (default "
                        "%(default)s)")
    parser.add_argument("--crossover", action="store_true",
                        help="run the fixed-worker passes twice and say, per tenant size, "
                        "which count wins")
    parser.add_argument("--chunk", type=int, default=2000,
                        help="rows per chunk in the decomposition pass")
    parser.add_argument("--seal", action="store_true",
                        help="seal a digest per tenant first (persisted in the database)")
    parser.add_argument("--skip", default="",
                        help="passes to leave out, comma-separated: raw,fixed,tx,fetch,"
                        "decompose")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile one single-process verify_tenant of the largest tenant")
    add_db_arguments(parser, "verify")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    if args.reuse_db:
        args.db_name, args.keep = args.reuse_db, True
        import psycopg

        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            [args.db_name]).fetchone() is None:
                sys.exit(f"--reuse-db: no database {args.db_name!r}")

    with bench_database(args, reuse=bool(args.reuse_db)) as db:
        from runs.integrity import seal_tenant_digest
        from runs.integrity_parallel import PARALLEL_FROM_RECORDS, tenant_records

        print(environment_line(db), flush=True)
        print(ensure_data(args, db.created) + " (migrated)", flush=True)
        tenants = _tenants_with_runs()
        if args.only:
            tenants = [t for t in tenants if t.slug in args.only.split(",")]
        if args.seal:
            for tenant in tenants:
                started = time.perf_counter()
                digest = seal_tenant_digest(tenant)
                print(f"sealed {tenant.slug}: " + (
                    f"digest #{digest.number} over {len(digest.run_heads):,} run heads"
                    if digest else "nothing moved since the last digest")
                    + f" ({time.perf_counter() - started:.1f} s)")
        print(data_line(), flush=True)
        sizes = {t.slug: tenant_records(t) for t in tenants}
        print("tenants: " + ", ".join(f"{slug} {n:,} records" for slug, n in sizes.items())
              + f"; auto: one process below {PARALLEL_FROM_RECORDS:,} records a tenant")
        print(f"load average at the start: {load_average()}\n", flush=True)

        rows: list[list[Any]] = []

        if "raw" not in skip:
            n, s = pass_raw_fetch(db.url, tenants)
            print(f"raw fetch: {n:,} rows in {s:.1f} s", flush=True)
            rows.append(["raw fetch (psycopg, verify's SQL)", "", n, s, n / s, "", ""])

        cli = pass_cli(tenants)
        for slug, (runs, records, seconds, intact, chosen) in cli.items():
            rows.append([f"ledger verify --tenant {slug} (auto: {chosen} process"
                         f"{'es' if chosen > 1 else ''})", f"{runs:,}", records, seconds,
                         records / seconds, runs / seconds, "intact" if intact else "BROKEN"])
        cli_seconds = sum(v[2] for v in cli.values())
        cli_records = sum(v[1] for v in cli.values())
        cli_runs = sum(v[0] for v in cli.values())
        all_intact = all(v[3] for v in cli.values())
        rows.append(["ledger verify, all tenants (graded)", f"{cli_runs:,}", cli_records,
                     cli_seconds, cli_records / cli_seconds, cli_runs / cli_seconds, ""])
        print(f"ledger verify: {cli_records:,} records in {cli_seconds:.1f} s "
              f"(load {load_average()})", flush=True)

        fixed: dict[int, list[dict[str, Any]]] = {}
        if "fixed" not in skip:
            counts = [int(w) for w in args.workers_list.split(",") if w]
            for round_ in range(2 if args.crossover else 1):
                for workers in counts:
                    per = pass_verify(tenants, workers=workers)
                    fixed.setdefault(workers, []).append(per)
                    for slug, (report, seconds) in per.items():
                        all_intact = all_intact and report.intact
                        rows.append([f"verify_tenant {slug}, workers={workers}"
                                     + (f" #{round_ + 1}" if args.crossover else ""),
                                     f"{report.runs:,}", report.records, seconds,
                                     report.records / seconds, report.runs / seconds,
                                     "intact" if report.intact else "BROKEN"])
                    print(f"workers={workers}: " + ", ".join(
                        f"{slug} {sec:.1f} s" for slug, (_, sec) in per.items())
                        + f" (load {load_average()})", flush=True)

        if "tx" not in skip:
            per = pass_verify(tenants, in_transaction=True)
            seconds = sum(s for _, s in per.values())
            records = sum(r.records for r, _ in per.values())
            runs = sum(r.runs for r, _ in per.values())
            all_intact = all_intact and all(r.intact for r, _ in per.values())
            rows.append(["verify_tenant in transaction.atomic() (one process)", f"{runs:,}",
                         records, seconds, records / seconds, runs / seconds,
                         "intact" if all(r.intact for r, _ in per.values()) else "BROKEN"])

        fetch_only = None
        if "fetch" not in skip:
            n, s = pass_fetch_only(tenants)
            fetch_only = s
            rows.append(["fetch only (verify's queries and cursor, nothing parsed)", "", n, s,
                         n / s, "", ""])

        stages = None
        if "decompose" not in skip:
            stages = pass_decomposition(tenants, args.chunk)
            n = stages.records
            print(f"decomposition: {n:,} rows, {stages.bytes / 1e6:,.0f} MB canonical JSON, "
                  f"{stages.mismatches} hash mismatches", flush=True)
            for stage, label in (("fetch", "  fetch, one query at a time (integrity_fast)"),
                                 ("parse", "  orjson.loads + empty optional fields dropped"),
                                 ("canonical", "  orjson.dumps, sorted keys"),
                                 ("sha256", "baseline: bare sha256(bytes).hexdigest() loop"),
                                 ("chain", "  chain link per record (from the stored links)")):
                s = stages.seconds[stage]
                rows.append([label, "", n, s, n / s, "", ""])

        print()
        print(table(["pass", "runs", "records", "seconds", "records/s", "runs/s", "report"],
                     rows))
        rate = cli_records / cli_seconds
        print(f"\nload average at the end: {load_average()}")
        if args.crossover and len(fixed) > 1:
            print("crossover (best of 2 per count): " + "; ".join(
                f"{slug} ({sizes[slug]:,} records): " + ", ".join(
                    f"{w} -> {min(p[slug][1] for p in fixed[w]):.1f} s" for w in fixed)
                for slug in sizes))
        single = None
        if 1 in fixed:
            single = sum(sec for _, sec in fixed[1][0].values())
            records = sum(r.records for r, _ in fixed[1][0].values())
            print(f"one process: {records / single:,.0f} records/s")
        if stages is not None:
            bare = stages.records / stages.seconds["sha256"]
            print(f"bare hashlib loop over the same bytes: {bare:,.0f} records/s "
                  f"({stages.bytes / max(stages.records, 1):,.0f} bytes/record); recomputed "
                  f"hashes differing from the stored ones: {stages.mismatches}")
            if single is not None:
                shares = dict(stages.seconds)
                if fetch_only is not None:
                    shares["fetch"] = fetch_only
                rest = single - sum(shares.values())
                # Timed alone, a stage holds a whole chunk of dicts or bytes at once, which the
                # pass never does (more allocation, more collection): the stages can sum to
                # more than the pass, and then there is no "rest" to name.
                rest_text = (f"rest (verify's own loop: grouping by run, per-run checks, "
                             f"merge) {rest:.1f} s = {100 * rest / single:.0f}%" if rest > 0 else
                             f"the stages timed alone sum to {single - rest:.1f} s, more than "
                             "the pass (each holds a whole chunk at once): read them as shares")
                print("where the single-process pass's time goes (" + f"{single:.1f} s): "
                      + ", ".join(f"{k} {v:.1f} s = {100 * v / single:.0f}%"
                                  for k, v in shares.items()) + ", " + rest_text)
        baseline = (f"one process {records / single:,.0f}/s" if single else "n/a") + (
            f"; bare sha256 {stages.records / stages.seconds['sha256']:,.0f}/s"
            if stages else "")
        record_figure("verify", "ledger verify (auto workers), all tenants, records/s",
                      f"{rate:,.0f}", f">= {TARGET:,} and intact", baseline,
                      f"{rate / TARGET:.2f}x target", rate >= TARGET and all_intact)

        if args.profile:
            from runs.integrity import verify_tenant

            tenant = max(tenants, key=lambda t: sizes[t.slug])
            print(f"\n== cProfile: verify_tenant({tenant.slug}, workers=1) (top 25 by tottime)")
            print(profile_call(lambda: verify_tenant(tenant, workers=1), top=25,
                               sort="tottime"))


def _tenants_with_runs() -> list[Any]:
    from core.models import Tenant
    from runs.models import Run

    ids = Run.objects.values("tenant_id").distinct()
    return list(Tenant.objects.filter(pk__in=ids).order_by("slug"))


if __name__ == "__main__":
    main()
