"""Generate realistic ledger data into the configured database (the generator itself is
``runs.sample_runs``, which the demo and the tests use too).

    python -m bench.generate --tenants 2 --tool-calls 1000000      # into the configured DB
    python -m bench.generate --copy --tool-calls 10000000          # PostgreSQL, with COPY
    python -m bench.generate --copy --tenants 8 --jobs 4 --tool-calls 10000000

``--copy`` (``runs.sample_copy``) writes the same runs, chained as ingestion chains them, with
``COPY`` and none of ingestion's checks for an untrusted agent: the way to ten million.
"""

from __future__ import annotations

import argparse
import sys
import time

from runs.sample_runs import (  # noqa: F401  (benchmarks import these from here)
    AGENTS,
    TOOLS,
    RunGenerator,
    batches,
    generate_runs,
    record_count,
    split_run,
)


def load(tenant_slugs: list[str], tool_calls: int, seed: int = 7, progress: bool = True,
         unique: bool = False) -> dict[str, int]:
    """Generate and ingest through the ingestion service (the API's path, minus HTTP);
    ``unique``: every address, secret and free text differs per record (``RunGenerator``)."""
    from core.models import Tenant
    from runs.ingest_schema import parse_batch
    from runs.services import ingest_batch

    totals: dict[str, int] = {}
    per_tenant = tool_calls // len(tenant_slugs)
    started = time.perf_counter()
    for slug in tenant_slugs:
        tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": slug.title()})
        for batch in batches(generate_runs(slug, per_tenant, seed, unique=unique)):
            result = ingest_batch(tenant, parse_batch({"runs": batch}), recorded_by="generator")
            for kind, count in result.created.items():
                totals[kind] = totals.get(kind, 0) + count
            if progress:
                rate = totals.get("tool_calls", 0) / max(time.perf_counter() - started, 1e-9)
                print(f"\r{slug}: {totals.get('tool_calls', 0):,} tool calls "
                      f"({rate:,.0f}/s)", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    return totals


def _copy_figures(prefix: str, calls: int, seconds: float) -> None:
    """The COPY generator's rate beside ingest_batch's on the same machine and moment (a few
    thousand tool calls into a tenant of their own), and the database's size per tool call."""
    from django.db import connection

    from bench._common import record_figure

    sample = min(5000, calls)
    started = time.perf_counter()
    load([f"{prefix}-baseline"], sample, progress=False)
    baseline = sample / (time.perf_counter() - started)
    rate = calls / seconds
    record_figure("generate", f"COPY generator, {calls:,} tool calls", f"{rate:,.0f} tool calls/s",
                  "(none: a figure)", f"ingest_batch {baseline:,.0f} tool calls/s",
                  f"{rate / baseline:.1f}x", None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        size = cursor.fetchone()[0]
    record_figure("generate", f"database size at {calls:,} tool calls",
                  f"{size / 2**30:.2f} GiB", "(none: a figure)", "-",
                  f"{size / max(calls, 1):,.0f} bytes per tool call", None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--tool-calls", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--copy", action="store_true",
                        help="PostgreSQL only: COPY the generated rows in (runs.sample_copy)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="with --copy: processes loading tenants side by side")
    args = parser.parse_args(argv)
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
    django.setup()
    slugs = [f"{args.prefix}-{i + 1}" for i in range(args.tenants)]
    started = time.perf_counter()
    if args.copy:
        from runs.sample_copy import copy_load_parallel

        rows = copy_load_parallel(slugs, args.tool_calls, args.seed, args.jobs)
        elapsed = time.perf_counter() - started
        calls = rows["runs_toolcall"]
        print(f"copied {rows} into {slugs} in {elapsed:.1f}s ({calls / elapsed:,.0f} tool "
              f"calls/s, {sum(rows.values()) / elapsed:,.0f} rows/s)")
        _copy_figures(args.prefix, calls, elapsed)
        return
    totals = load(slugs, args.tool_calls, args.seed)
    elapsed = time.perf_counter() - started
    print(f"generated {totals} into {slugs} in {elapsed:.1f}s "
          f"({totals.get('tool_calls', 0) / elapsed:,.0f} tool calls/s)")


if __name__ == "__main__":
    main()
