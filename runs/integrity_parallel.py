"""``ledger verify`` on several cores: worker processes share the runs of a tenant and read
them from one exported PostgreSQL snapshot, so the result is that of a single consistent pass.

Verification is CPU-bound in Python (canonical JSON and row decoding; bench/verify.py), so one
process per core is what brings it past 100,000 records/s.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from django.db import connection

if TYPE_CHECKING:
    from .integrity import VerifyReport

# No model imports at module level: spawned workers unpickle these functions before Django is
# set up.
CHUNKS_PER_WORKER = 4
_SIGNED: dict[str, list[tuple[int, str, int]]] = {}


def _start_worker(database: str, signed: dict[str, list[tuple[int, str, int]]]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
    import django

    django.setup()
    # The same database as the parent's connection (under tests, the test database).
    connection.settings_dict["NAME"] = database
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
    context = multiprocessing.get_context("spawn")  # fresh processes, fresh connections
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                             initargs=(connection.settings_dict["NAME"], signed)) as pool:
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
