"""Generate realistic ledger data into the configured database (the generator itself is
``runs.sample_runs``, which the demo and the tests use too).

    python -m bench.generate --tenants 2 --tool-calls 1000000      # into the configured DB
    python -m bench.generate --copy --tool-calls 10000000          # PostgreSQL, with COPY

``--copy`` (``bench.copy_load``) writes the same runs, chained as ingestion chains them, with
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tenants", type=int, default=2)
    parser.add_argument("--tool-calls", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--copy", action="store_true",
                        help="PostgreSQL only: COPY the generated rows in (bench.copy_load)")
    args = parser.parse_args(argv)
    import os

    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
    django.setup()
    slugs = [f"{args.prefix}-{i + 1}" for i in range(args.tenants)]
    started = time.perf_counter()
    if args.copy:
        from bench.copy_load import copy_load

        rows = copy_load(slugs, args.tool_calls, args.seed)
        elapsed = time.perf_counter() - started
        calls = rows["runs_toolcall"]
        print(f"copied {rows} into {slugs} in {elapsed:.1f}s ({calls / elapsed:,.0f} tool "
              f"calls/s, {sum(rows.values()) / elapsed:,.0f} rows/s)")
        return
    totals = load(slugs, args.tool_calls, args.seed)
    elapsed = time.perf_counter() - started
    print(f"generated {totals} into {slugs} in {elapsed:.1f}s "
          f"({totals.get('tool_calls', 0) / elapsed:,.0f} tool calls/s)")


if __name__ == "__main__":
    main()
