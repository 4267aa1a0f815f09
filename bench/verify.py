"""``ledger verify`` over 1,000,000+ records: records/s beside a bare hashlib loop, same run.

    .venv/bin/python -m bench.verify --reuse-db ledger_bench_admin   # the admin bench's 1M calls
    .venv/bin/python -m bench.verify --records 1000000                # load afresh, then measure
    .venv/bin/python -m bench.verify --reuse-db ledger_bench_admin --seal --profile

Target: ``verify_tenant`` (what ``ledger verify`` runs per tenant) at >= 100,000 records/s.

``--reuse-db NAME`` measures an existing database (``migrate`` runs on it first; it is kept);
without it, ``--records`` (1,000,000) records (~1.8 per tool call) are loaded into a fresh
``ledger_bench_verify`` through ``bench.generate.load`` and the database is dropped at the end
unless ``--keep``. ``--seal`` first seals a signed digest per tenant (``seal_tenant_digest``,
persisted), so verification also checks every run against a signed head, as it does once the
beat task has sealed digests.

Passes, in this order, each over every tenant:

1. **raw fetch**: the SQL of the same five querysets ``verify_tenant`` streams, on a plain
   psycopg connection, server-side cursors ``WITH HOLD`` as Django declares them in autocommit,
   JSON left as text: the database + driver floor.
2. **verify_tenant** (autocommit, as the CLI calls it; ``progress=None``), ``--repeat`` times:
   records/s = ``report.records`` / s, runs/s; every report must be intact.
3. **verify_tenant in one transaction** (``transaction.atomic``): Django then declares its
   cursors without ``WITH HOLD``, so PostgreSQL does not materialize each result first.
4. **fetch only**: ``runs.integrity._record_stream`` and ``_run_rows``, the same fetch and
   merge verify uses (on PostgreSQL: server-side cursors, canonical timestamps from SQL,
   JSON as text for orjson), nothing hashed.
5. **decomposition + bare hashlib** (the baseline): the same rows, one model at a time in
   chunks of ``--chunk``; each stage timed alone: fetch; ``content_of`` + ``canonical_json``
   (the canonical bytes, built once); then the bare loop ``hashlib.sha256(b).hexdigest()`` over
   those bytes; then one chain link per record. Every recomputed hash is checked against the
   stored ``content_hash`` (outside the timing), so the bytes are the bytes verify hashes.

6. **prototype**: the same SQL on a plain psycopg cursor (C timestamp loader, ``orjson.loads``
   for the JSON columns) with the same per-record work (canonical bytes, sha256, chain link,
   comparison): what a verify without the ORM's row handling could reach. No merge or per-run
   checks, so a floor, not a drop-in.

``--profile`` cProfiles one ``verify_tenant`` of the first tenant (top 25 by tottime).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    profile_call,
    table,
    verdict,
)

TARGET = 100_000  # records/s
TENANTS = ["bench-1", "bench-2"]
RECORDS_PER_TOOL_CALL = 1.8  # bench.generate's mix: runs, steps, model calls, annotations


# -- data --------------------------------------------------------------------------------------


def ensure_data(args: argparse.Namespace, created: bool) -> str:
    from django.db import connection

    from bench.generate import load
    from runs.models import ToolCall

    have = ToolCall.objects.count()
    if not created:
        if not have:
            sys.exit(f"database {args.db_name} holds no tool calls: nothing to verify")
        return f"reused {args.db_name}"
    tool_calls = max(1, round(args.records / RECORDS_PER_TOOL_CALL))
    started = time.perf_counter()
    totals = load(TENANTS, tool_calls, args.seed, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    with connection.cursor() as cursor:
        for name in ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall",
                     "runs_annotation"):
            cursor.execute(f"VACUUM ANALYZE {name}")
    return (f"loaded {sum(totals.values()):,} records ({totals.get('tool_calls', 0):,} tool "
            f"calls) in {seconds:,.0f} s through ingest_batch, then VACUUM ANALYZE")


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


# -- the querysets verify_tenant streams (mirrors runs.integrity) ------------------------------


def run_rows_qs(tenant: Any) -> Any:
    from django.db.models import F

    from runs.models import Run

    refs = {f"_{n}": F(p) for n, p in Run.content_refs.items()}
    own = [n for n in Run.content_fields if n not in Run.content_refs]
    return (Run.objects.filter(tenant=tenant).order_by("id")
            .values("id", "content_hash", "chain_hash", "last_seq", "head_hash", *own, **refs))


def record_qs(model: Any, tenant: Any) -> Any:
    from django.db.models import F

    from runs.models import Run

    refs = {f"_{name}": F(path) for name, path in model.content_refs.items()}
    own = [n for n in model.content_fields if n not in model.content_refs]
    return (model.objects.filter(run__in=Run.objects.filter(tenant=tenant))
            .order_by("run_id", "seq")
            .values("seq", "content_hash", "chain_hash", *own, run_pk=F("run_id"), **refs))


def streams(tenant: Any) -> list[tuple[Any, Any]]:
    """(model, queryset) of the run rows and the four record kinds."""
    from runs.integrity import RECORD_MODELS
    from runs.models import Run

    return [(Run, run_rows_qs(tenant))] + [(m, record_qs(m, tenant)) for m in RECORD_MODELS]


# -- passes ------------------------------------------------------------------------------------


def pass_verify(tenants: list[Any], in_transaction: bool = False, workers: int = 1
                ) -> dict[str, Any]:
    """verify_tenant over each tenant: per-tenant (runs, records, digests, seconds, intact)."""
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
    """What verify_tenant fetches, merged as it merges it, no hashing."""
    from django.db import transaction

    from runs.integrity import Scope, _record_stream, _run_rows

    records, started = 0, time.perf_counter()
    with transaction.atomic():  # server-side cursors live in a transaction, as in verify
        for tenant in tenants:
            for _ in _run_rows(tenant, Scope(tenant.pk)):
                records += 1
            for _ in _record_stream(tenant, Scope(tenant.pk)):
                records += 1
    return records, time.perf_counter() - started


def pass_raw_fetch(db_url: str, tenants: list[Any]) -> tuple[int, float]:
    """The same SQL on a plain psycopg connection, WITH HOLD cursors, JSON as text."""
    import psycopg
    from psycopg.types.string import TextLoader

    records = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)
        started = time.perf_counter()
        for tenant in tenants:
            for i, (_, qs) in enumerate(streams(tenant)):
                sql, params = qs.query.get_compiler(using=qs.db).as_sql()
                with conn.cursor(name=f"bench_raw_{i}", withhold=True) as cur:
                    cur.execute(sql, params)
                    while rows := cur.fetchmany(2000):
                        records += len(rows)
        seconds = time.perf_counter() - started
    return records, seconds


def pass_prototype(db_url: str, tenants: list[Any]) -> tuple[int, float, int]:
    """What verify's per-record work costs without the ORM: the same SQL on a plain psycopg
    cursor (psycopg's C timestamp loader, JSON as text decoded by ``orjson.loads``), then
    ``content_of`` + ``canonical_json`` + sha256 + a chain link per record and a comparison with
    the stored hashes. No merge, no per-run grouping: a floor for a Python verify, not a
    drop-in."""
    import psycopg
    from django.db.models import JSONField
    from psycopg.types.string import TextLoader

    from core.canonical import GENESIS, canonical_json, chain_hash
    from runs.models.base import content_of

    loads, sha256 = orjson_loads(), hashlib.sha256
    records = mismatches = 0
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)
        started = time.perf_counter()
        for tenant in tenants:
            for i, (model, qs) in enumerate(streams(tenant)):
                kind, fields = model.kind, model.content_fields
                optional = model.optional_content_fields
                json_names = {f.name for f in model._meta.concrete_fields
                              if isinstance(f, JSONField)}
                sql, params = qs.query.get_compiler(using=qs.db).as_sql()
                with conn.cursor(name=f"bench_proto_{i}", withhold=True) as cur:
                    cur.execute(sql, params)
                    assert cur.description is not None
                    names = [d.name.lstrip("_") for d in cur.description]
                    json_at = [j for j, n in enumerate(names) if n in json_names]
                    link = GENESIS
                    while rows := cur.fetchmany(2000):
                        for values in rows:
                            row = dict(zip(names, values, strict=True))
                            for j in json_at:
                                if values[j] is not None:
                                    row[names[j]] = loads(values[j])
                            digest = sha256(canonical_json(content_of(
                                kind, fields, row, optional))).hexdigest()
                            link = chain_hash(link, row.get("seq", 0), digest)
                            if digest != row["content_hash"]:
                                mismatches += 1
                        records += len(rows)
        seconds = time.perf_counter() - started
    return records, seconds, mismatches


def orjson_loads() -> Callable[[str], Any]:
    import orjson

    return orjson.loads


class Stages:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"fetch": 0.0, "canonical": 0.0, "sha256": 0.0,
                                          "chain": 0.0}
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
    """Fetch, canonical bytes, bare sha256, chain links: each stage timed alone."""
    from core.canonical import GENESIS, canonical_json, chain_hash
    from runs.models.base import content_of

    sha256 = hashlib.sha256
    stages = Stages()
    for tenant in tenants:
        for model, qs in streams(tenant):
            kind, fields, refs = model.kind, model.content_fields, tuple(model.content_refs)
            optional = model.optional_content_fields

            def rows(qs: Any = qs, refs: tuple[str, ...] = refs) -> Iterator[dict[str, Any]]:
                for row in qs.iterator(chunk_size=2000):
                    for name in refs:  # as runs.integrity._tagged does
                        row[name] = row.pop(f"_{name}")
                    yield row

            for part in _chunks(rows(), chunk, stages):
                def canonical(part: list[dict[str, Any]] = part, kind: str = kind,
                              fields: tuple[str, ...] = fields,
                              optional: frozenset[str] = optional) -> list[bytes]:
                    return [canonical_json(content_of(kind, fields, row, optional))
                            for row in part]

                blobs: list[bytes] = stages.time("canonical", canonical)

                def bare_hash(blobs: list[bytes] = blobs) -> list[str]:
                    return [sha256(b).hexdigest() for b in blobs]

                hashes = stages.time("sha256", bare_hash)

                def links(part: list[dict[str, Any]] = part, hashes: list[str] = hashes
                          ) -> None:
                    link = GENESIS
                    for row, digest in zip(part, hashes, strict=True):
                        link = chain_hash(link, row.get("seq", 0), digest)

                stages.time("chain", links)
                stages.records += len(part)
                stages.bytes += sum(map(len, blobs))
                stages.mismatches += sum(1 for row, digest in zip(part, hashes, strict=True)
                                         if row["content_hash"] != digest)
    return stages


# -- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse-db", metavar="NAME",
                        help="measure this existing database (migrated first, always kept)")
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records to load into a fresh database (without --reuse-db)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=1, help="verify_tenant passes")
    parser.add_argument("--workers", type=int, default=2,
                        help="processes for verify_tenant (ledger verify's default: the cores, "
                        "at most 4; 1 = a single pass)")
    parser.add_argument("--chunk", type=int, default=2000,
                        help="rows per chunk in the decomposition pass (large chunks keep many "
                        "rows alive and make the garbage collector's passes longer)")
    parser.add_argument("--seal", action="store_true",
                        help="seal a digest per tenant first (persisted in the database)")
    parser.add_argument("--skip", default="",
                        help="passes to leave out, comma-separated: raw,tx,fetch,decompose,proto")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile verify_tenant of the first tenant (top 25 by tottime)")
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

        print(environment_line(db), flush=True)
        print(ensure_data(args, db.created) + " (migrated)", flush=True)
        tenants = _tenants_with_runs()
        if args.seal:
            for tenant in tenants:
                started = time.perf_counter()
                digest = seal_tenant_digest(tenant)
                print(f"sealed {tenant.slug}: " + (
                    f"digest #{digest.number} over {len(digest.run_heads):,} run heads"
                    if digest else "nothing moved since the last digest")
                    + f" ({time.perf_counter() - started:.1f} s)")
        print(data_line(), flush=True)
        print(f"tenants: {', '.join(t.slug for t in tenants)}\n", flush=True)

        rows: list[list[Any]] = []

        if "raw" not in skip:
            n, s = pass_raw_fetch(db.url, tenants)
            print(f"raw fetch: {n:,} rows in {s:.1f} s", flush=True)
            rows.append(["raw fetch (psycopg, same SQL, JSON as text)", "", n, s, n / s, "",
                         ""])

        best: tuple[float, int, int] | None = None
        all_intact = True
        for i in range(args.repeat):
            per = pass_verify(tenants, workers=args.workers)
            for slug, (report, seconds) in per.items():
                all_intact = all_intact and report.intact
                rows.append([f"verify_tenant {slug}" + (f" #{i + 1}" if args.repeat > 1 else ""),
                             f"{report.runs:,} / {report.digests}", report.records, seconds,
                             report.records / seconds, report.runs / seconds,
                             "intact" if report.intact else f"{len(report.breaks)} BROKEN"])
            seconds = sum(s for _, s in per.values())
            records = sum(r.records for r, _ in per.values())
            runs = sum(r.runs for r, _ in per.values())
            rows.append(["verify_tenant, all tenants" + (f" #{i + 1}" if args.repeat > 1
                                                         else ""),
                         f"{runs:,}", records, seconds, records / seconds, runs / seconds, ""])
            print(f"verify pass {i + 1}: {records:,} records in {seconds:.1f} s", flush=True)
            if best is None or seconds < best[0]:
                best = (seconds, records, runs)
        assert best is not None

        if "tx" not in skip:
            per = pass_verify(tenants, in_transaction=True)
            seconds = sum(s for _, s in per.values())
            records = sum(r.records for r, _ in per.values())
            runs = sum(r.runs for r, _ in per.values())
            all_intact = all_intact and all(r.intact for r, _ in per.values())
            print(f"verify in one transaction: {records:,} records in {seconds:.1f} s",
                  flush=True)
            rows.append(["verify_tenant in transaction.atomic()", f"{runs:,}", records,
                         seconds, records / seconds, runs / seconds,
                         "intact" if all(r.intact for r, _ in per.values()) else "BROKEN"])

        fetch_only = None
        if "fetch" not in skip:
            n, s = pass_fetch_only(tenants)
            fetch_only = s
            print(f"fetch only: {n:,} rows in {s:.1f} s", flush=True)
            rows.append(["fetch only (same querysets + merge, no hashing)", "", n, s, n / s,
                         "", ""])

        stages = None
        if "decompose" not in skip:
            stages = pass_decomposition(tenants, args.chunk)
            n = stages.records
            print(f"decomposition: {n:,} rows, {stages.bytes / 1e6:,.0f} MB canonical JSON, "
                  f"{stages.mismatches} hash mismatches", flush=True)
            for stage, label in (("fetch", "  fetch, one stream at a time (values() + JSONField)"),
                                 ("canonical", "  content_of + canonical_json"),
                                 ("sha256", "baseline: bare sha256(bytes).hexdigest() loop"),
                                 ("chain", "  chain link per record (chain_hash)")):
                s = stages.seconds[stage]
                rows.append([label, "", n, s, n / s, "", ""])
            hashing = stages.seconds["sha256"] + stages.seconds["chain"]
            rows.append(["  sha256 + chain link (all verify must hash)", "", n, hashing,
                         n / hashing, "", ""])

        if "proto" not in skip:
            n, s, bad = pass_prototype(db.url, tenants)
            print(f"prototype: {n:,} rows in {s:.1f} s, {bad} hash mismatches", flush=True)
            rows.append(["prototype: raw psycopg + orjson.loads + canonical + sha256 + link",
                         "", n, s, n / s, "", f"{bad} mismatches"])

        print()
        print(table(["pass", "runs / digests", "records", "seconds", "records/s", "runs/s",
                     "report"], rows))
        seconds, records, runs = best
        rate = records / seconds
        print(f"\nverify_tenant: {rate:,.0f} records/s, {runs / seconds:,.0f} runs/s over "
              f"{records:,} records (best of {args.repeat}); reports intact: "
              f"{'yes' if all_intact else 'NO'}")
        if stages is not None:
            bare = stages.records / stages.seconds["sha256"]
            print(f"bare hashlib loop over the same bytes: {bare:,.0f} records/s "
                  f"({stages.bytes / stages.seconds['sha256'] / 1e6:,.0f} MB/s, "
                  f"{stages.bytes / max(stages.records, 1):,.0f} bytes/record); verify is "
                  f"{bare / rate:.1f}x slower; recomputed hashes differing from the stored "
                  f"ones: {stages.mismatches}")
            shares = dict(stages.seconds)
            if fetch_only is not None:  # the exact fetch verify does, merge included
                shares["fetch"] = fetch_only
            rest = seconds - sum(shares.values())
            print("where one verify pass's time goes (fetch: the fetch-only pass; the others: "
                  "decomposition stages): " + ", ".join(
                      f"{k} {v:.1f} s = {100 * v / seconds:.0f}%" for k, v in shares.items())
                  + (f", rest (verify's own loop: grouping, dicts, checks) {rest:.1f} s = "
                     f"{100 * rest / seconds:.0f}%" if rest > 0 else
                     f"; measured apart they add up to {100 * (seconds - rest) / seconds:.0f}%: "
                     "verify's own loop is within the noise"))
        ok = rate >= TARGET and all_intact
        short = "" if rate >= TARGET else f" ({100 * (1 - rate / TARGET):.0f}% short)"
        print(f"target: >= {TARGET:,} records/s and intact: {verdict(ok)}{short}")

        if args.profile:
            from runs.integrity import verify_tenant

            tenant = tenants[0]
            print(f"\n== cProfile: verify_tenant({tenant.slug}) (top 25 by tottime)")
            print(profile_call(lambda: verify_tenant(tenant), top=25, sort="tottime"))


def _tenants_with_runs() -> list[Any]:
    from core.models import Tenant
    from runs.models import Run

    ids = Run.objects.values("tenant_id").distinct()
    return list(Tenant.objects.filter(pk__in=ids).order_by("slug"))


if __name__ == "__main__":
    main()
