"""Retention by the month: a past month whose every record belongs to a run due for removal
loses its partitions whole (PostgreSQL), instead of having its rows deleted one by one.

A record table's month partition (core/partitions.py) holds the records the portal stored that
month, of every tenant. The month goes whole when every run with a record in it (the governance
logs aside, which are never due) is closed, past its tenant's retention period, held by
nothing and intact: those runs are removed together, in one transaction, under signed removal
records of ``REMOVAL_BATCH`` runs as the run-by-run removal signs them, and
``ledger_apply_removals`` drops each of the month's partitions that holds their rows only (the
annotations' partition keeps the governance log's notes, so its rows are deleted). Their
records of other months are deleted as usual.

A month any run keeps (open, not yet due, held, broken, of a tenant that keeps everything) is
left to the run-by-run removal, and says why. A month is weighed only once its end is past the
shortest retention period of any tenant; the run-by-run removal removes its runs as they fall
due meanwhile, and a month emptied that way is dropped by ``drop_empty_partitions``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from django.db import OperationalError, connection, transaction
from django.db.models import QuerySet
from django.db.models.expressions import RawSQL

from core.models import Tenant
from core.partitions import partitions

from .annotations import GOVERNANCE_RUN_ID
from .integrity import RECORD_MODELS
from .models import RemovalRecord, Run
from .retention import (
    REMOVAL_BATCH,
    held_runs,
    is_due,
    not_intact,
    note_removal,
    sign_removal_of,
)

log = logging.getLogger(__name__)
LOCK_NOT_AVAILABLE = "55P03"
NOTHING_STORED = "no run has a record in it"


@dataclass
class MonthRemoval:
    month: date
    runs_by_tenant: dict[str, int] = field(default_factory=dict)
    records: int = 0
    dropped: list[str] = field(default_factory=list)
    removal_records: dict[str, list[int]] = field(default_factory=dict)
    kept_because: str = ""  # why the month was left to the run-by-run removal

    @property
    def runs(self) -> int:
        return sum(self.runs_by_tenant.values())

    def summary(self) -> str:
        if self.kept_because:
            return f"{self.month:%Y-%m}: not removed whole: {self.kept_because}"
        return (f"{self.month:%Y-%m}: removed whole, {self.runs} runs ({self.records} records);"
                f" partitions dropped: {', '.join(self.dropped) or 'none'}")


def record_months(before: datetime) -> list[date]:
    """The months, oldest first, with a partition of a record table that ends by ``before``."""
    tables = {model._meta.db_table for model in RECORD_MODELS}
    months = set()
    for part in partitions():
        suffix = part.name.removeprefix(f"{part.table}_p")
        if part.table in tables and suffix.isdigit() and len(suffix) == 6:
            month = date(int(suffix[:4]), int(suffix[4:]), 1)
            if _bounds(month)[1] <= before:
                months.add(month)
    return sorted(months)


def _bounds(month: date) -> tuple[datetime, datetime]:
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (datetime(month.year, month.month, 1, tzinfo=UTC),
            datetime(following.year, following.month, 1, tzinfo=UTC))


def runs_recorded_in(month: date) -> QuerySet[Run]:
    """The runs with a record stored in ``month``, the governance logs aside."""
    low, high = _bounds(month)
    # One IN over a UNION, which PostgreSQL plans as a semi-join. An OR of four IN-subqueries
    # (one a table) is a subplan probed per run row, and a month's ids do not fit a hashed
    # one: over 2M tool calls that query ran for more than 14 minutes.
    stored = " UNION ".join(
        f"SELECT run_id FROM {connection.ops.quote_name(model._meta.db_table)} "  # noqa: S608
        "WHERE recorded_at >= %s AND recorded_at < %s" for model in RECORD_MODELS)
    return (Run.objects.filter(pk__in=RawSQL(  # noqa: S611  (model tables; values as params)
        stored, [low, high] * len(RECORD_MODELS)))
            .exclude(run_id=GOVERNANCE_RUN_ID))


def plan_month(month: date, now: datetime, only: Tenant | None = None
               ) -> tuple[dict[Tenant, list[int]], str]:
    """The runs removing ``month`` whole would remove, by tenant, or why it cannot go whole."""
    by_tenant: dict[int, list[int]] = defaultdict(list)
    for tenant_id, pk in runs_recorded_in(month).order_by().values_list(
            "tenant_id", "pk").iterator(chunk_size=10_000):
        by_tenant[tenant_id].append(pk)
    if not by_tenant:
        return {}, NOTHING_STORED
    if only is not None and set(by_tenant) != {only.pk}:
        return {}, "it holds records of other tenants (the hourly task weighs every tenant)"
    plan: dict[Tenant, list[int]] = {}
    for tenant in Tenant.objects.filter(pk__in=by_tenant).order_by("pk"):
        pks = by_tenant[tenant.pk]
        if tenant.retention_days is None:
            return {}, f"{tenant.slug} keeps its records (no retention period)"
        runs = runs_recorded_in(month).filter(tenant=tenant)
        # not due_runs()'s complement by NOT IN: that too is a subplan per row
        waiting = runs.exclude(is_due(tenant, now)).count()
        if waiting:
            return {}, f"{waiting} runs of {tenant.slug} are open or not yet due"
        held = {name: len(found) for name, found in held_runs(tenant, runs, now).items()
                if found}
        if held:
            return {}, f"runs of {tenant.slug} are held ({_listed(held)})"
        with transaction.atomic():  # verification reads through server-side cursors
            broken = not_intact(tenant, pks)
        if broken:
            return {}, f"{len(broken)} runs of {tenant.slug} do not verify"
        plan[tenant] = pks
    return plan, ""


def remove_month(month: date, now: datetime, only: Tenant | None = None, *,
                 dry_run: bool = False) -> MonthRemoval:
    """Remove every run stored in ``month`` and drop the month's partitions that held nothing
    else, if nothing keeps any of those runs."""
    removal = MonthRemoval(month)
    plan, removal.kept_because = plan_month(month, now, only)
    if removal.kept_because or dry_run:
        removal.runs_by_tenant = {tenant.slug: len(pks) for tenant, pks in plan.items()}
        return removal
    try:
        _remove_planned(month, now, plan, removal)
    except _Kept as kept:
        return MonthRemoval(month, kept_because=str(kept))
    except OperationalError as error:
        if getattr(error.__cause__, "sqlstate", "") != LOCK_NOT_AVAILABLE:
            raise
        return MonthRemoval(month, kept_because="its tables were busy; the next pass tries again")
    return removal


def remove_due_months(now: datetime, only: Tenant | None = None, *,
                      dry_run: bool = False) -> list[MonthRemoval]:
    """Weigh every past month that ends before the shortest retention period (``only``'s, for
    one tenant) and remove the ones that can go whole; one report per month weighed."""
    if connection.vendor != "postgresql":
        return []  # SQLite's tables are not partitioned
    periods = ([only.retention_days] if only is not None else
               Tenant.objects.filter(retention_days__isnull=False)
               .values_list("retention_days", flat=True))
    shortest = min((days for days in periods if days is not None), default=None)
    if shortest is None:
        return []
    weighed = [remove_month(month, now, only, dry_run=dry_run)
               for month in record_months(now - timedelta(days=shortest))]
    # an empty month is drop_empty_partitions' (core/partitions.py)
    months = [month for month in weighed if month.kept_because != NOTHING_STORED]
    for month in months:  # what the hourly task did with each month, and why one stayed
        log.info("retention: %s%s", "(dry run) " if dry_run else "", month.summary())
    return months


class _Kept(Exception):
    """Something kept a run of the month between the plan and its removal."""


@transaction.atomic
def _remove_planned(month: date, now: datetime, plan: dict[Tenant, list[int]],
                    removal: MonthRemoval) -> None:
    # The tenant rows' locks, in order, as a removal batch and a legal hold take them.
    Tenant.objects.filter(pk__in=[t.pk for t in plan]).lock_rows()
    records: list[RemovalRecord] = []
    for tenant, pks in plan.items():
        # the month's runs as a subquery: a month's hundreds of thousands of ids never go
        # into a statement (no new record lands in a past month)
        late = set().union(*held_runs(tenant, runs_recorded_in(month).filter(tenant=tenant),
                                      now).values())
        if late:
            raise _Kept(f"{len(late)} runs of {tenant.slug} were held meanwhile")
        for start in range(0, len(pks), REMOVAL_BATCH):
            record = sign_removal_of(tenant, now, pks[start:start + REMOVAL_BATCH])
            note_removal(tenant, record, f", with the month {month:%Y-%m}")
            records.append(record)
            removal.removal_records.setdefault(tenant.slug, []).append(record.number)
    with connection.cursor() as cursor:
        # The drops come last in there, and commit follows: the tables' locks are short.
        cursor.execute("SELECT ledger_apply_removals(%s, %s)",
                       [[record.pk for record in records], month])
        removal.dropped = list(cursor.fetchone()[0])
    removal.runs_by_tenant = {tenant.slug: len(pks) for tenant, pks in plan.items()}
    removal.records = sum(record.records for record in records)


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} by {name}" for name, n in counts.items())
