"""``ledger verify`` on several cores: worker processes share the runs of a tenant and read
them from one exported PostgreSQL snapshot, so the result is that of a single consistent pass.

Verification is CPU-bound in Python (canonical JSON and row decoding; bench/verify.py), so one
process per core is what brings a big tenant past what one process does. A worker is a fresh
spawned process that sets Django up: about 2.7 s of start-up per tenant on the 2-core machine
the benchmarks run on, more than a small tenant's whole single-process pass.
:func:`choose_workers` therefore picks the count by the tenant's size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import as_completed
from typing import TYPE_CHECKING, Any

from django.db import connection

from core.processes import MOST_PROCESSES, choose_processes, django_pool

if TYPE_CHECKING:
    from .integrity import VerifyReport

# No model imports at module level: spawned workers unpickle these functions before Django is
# set up.
CHUNKS_PER_WORKER = 4
#: Records (runs + ``Run.last_seq`` summed) from which a second process pays for its start-up,
#: and each further one needs as many more. One process fetches the next rows while it hashes
#: these (``integrity_fast``), a core for PostgreSQL and one for Python, so a second process
#: only wins on a big tenant. Measured on 2 cores at load 1.0-1.7 (``python -m bench.verify
#: --tenant-records 400000,700000 --skip raw,tx,fetch,decompose --workers-list 1,2``, and the
#: default 20,000/280,000): one process 0.3 / 2.9 / 4.3 / 7.0 s for 20k / 280k / 400k / 700k
#: records, two 1.4 / 3.3 / 4.3 / 5.8 s: even at 400,000, two from there.
PARALLEL_FROM_RECORDS = 400_000
MOST_WORKERS = MOST_PROCESSES
_SIGNED: dict[str, list[tuple[int, str, int]]] = {}


def choose_workers(records: int, cpus: int, threshold: int = PARALLEL_FROM_RECORDS) -> int:
    """How many processes verify ``records`` records (``core.processes.choose_processes``)."""
    return choose_processes(records, cpus, threshold)


def tenant_records(tenant: Any) -> int:
    """The records ``verify_tenant`` checks for ``tenant``, from the run rows alone: each run
    is a record and heads a chain of ``last_seq`` more (one aggregate, no ledger-table scan)."""
    from django.db.models import Count, Sum

    from .models import Run

    totals = Run.objects.filter(tenant=tenant).aggregate(runs=Count("pk"),
                                                         chained=Sum("last_seq"))
    return int(totals["runs"]) + int(totals["chained"] or 0)


def workers_for(tenant: Any) -> int:
    """:func:`choose_workers` for ``tenant`` on this machine's cores."""
    return choose_workers(tenant_records(tenant), os.cpu_count() or 1,
                          threshold=PARALLEL_FROM_RECORDS)


def _remember_signed(signed: dict[str, list[tuple[int, str, int]]]) -> None:
    _SIGNED.update(signed)


def _verify_share(tenant_id: int, slug: str, snapshot: str, pk_range: tuple[int, int]) -> Any:
    from django.db import transaction

    from core.models import Tenant

    from .integrity import Scope, verify_scope

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
        return verify_scope(Tenant(pk=tenant_id, slug=slug), Scope(tenant_id, None, pk_range),
                            _SIGNED)


def _shares(pks: list[int], count: int) -> list[tuple[int, int]]:
    size = max(1, -(-len(pks) // count))
    return [(pks[i], pks[min(i + size, len(pks)) - 1]) for i in range(0, len(pks), size)]


def verify_in_parallel(tenant: Any, workers: int,
                       progress: Callable[[int, int], None] | None
                       ) -> tuple[VerifyReport, Any]:
    """Run inside a REPEATABLE READ transaction whose snapshot the workers import; return the
    report and the heads the digests signed."""
    from .integrity import VerifyReport, _verify_digests
    from .models import Run

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
    report = VerifyReport()
    signed = _verify_digests(tenant, report)
    pks = list(Run.objects.filter(tenant=tenant).order_by("pk").values_list("pk", flat=True))
    if not pks:
        return report, signed
    with django_pool(workers, then=_remember_signed, args=(signed,)) as pool:
        futures = [pool.submit(_verify_share, tenant.pk, tenant.slug, snapshot, share)
                   for share in _shares(pks, workers * CHUNKS_PER_WORKER)]
        for future in as_completed(futures):
            part = future.result()
            report.runs += part.runs
            report.records += part.records
            report.breaks += part.breaks
            if progress:
                progress(report.runs, len(pks))
    report.breaks.sort(key=lambda b: (b.run_id, b.seq or 0))
    return report, signed
