"""Retention and legal hold: how long a tenant's ledger records are kept.

A tenant with ``retention_days`` set has its closed runs removed, whole, once they ended longer
ago than that, unless something holds them. Hold sources are registered by the apps that know
why a run matters (``register_hold_source``); the ledger registers two:

- ``legal hold``: a hold placed by hand on one run or on the whole tenant;
- ``linked``: a run (or one of its records) that anything outside its own chain points at: a
  replay, a rollback, an incident, another run replaying it. Links are found from the model
  graph, so a new app's links hold runs without registering anything;

and governance adds ``governed exception`` (``policies.holds``): a run with calls decided under
an exception that is still in force.

Removal is the scheduled task ``runs.apply_retention``. Each batch of runs is removed in one
transaction together with a removal record, signed like a digest, listing every removed run's
head; ``ledger verify`` accepts a run a digest signed only if such a record accounts for it.
Runs whose chain does not verify are never removed: that would destroy the evidence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, models, transaction
from django.db.models import ForeignObjectRel, Q, QuerySet
from django.utils import timezone

from core import signing
from core.actors import Actor, person_of
from core.canonical import GENESIS, canonical_json, content_hash
from core.models import Tenant

from .annotations import GOVERNANCE_RUN_ID, annotate
from .integrity import RECORD_MODELS, Scope, VerifyReport, _verify_digests, verify_scope
from .models import (
    AnnotationKind,
    DeferredItem,
    LegalHold,
    OtlpEvent,
    OtlpSpan,
    OtlpTrace,
    RemovalRecord,
    Run,
)
from .models.records import TERMINAL_RUN_STATUSES

#: A hold source gets the tenant, the runs due for removal and the time, and returns the
#: primary keys of those it holds (a queryset of pks or any iterable).
HoldSource = Callable[[Tenant, "QuerySet[Run]", datetime], Any]
HOLD_SOURCES: dict[str, HoldSource] = {}
REMOVAL_BATCH = 500


def register_hold_source(name: str, source: HoldSource) -> None:
    HOLD_SOURCES[name] = source


@dataclass
class RetentionReport:
    tenant: str
    cutoff: datetime | None
    due: int = 0
    held: dict[str, int] = field(default_factory=dict)
    removed_runs: int = 0
    removed_records: int = 0
    removal_records: list[int] = field(default_factory=list)
    not_intact: list[str] = field(default_factory=list)
    months: list[Any] = field(default_factory=list)  # retention_months.MonthRemoval

    def summary(self) -> str:
        if self.cutoff is None:
            return f"{self.tenant}: no retention period set; nothing is removed"
        held = ", ".join(f"{n} by {source}" for source, n in self.held.items() if n)
        return (f"{self.tenant}: {self.due} runs ended before {self.cutoff:%Y-%m-%d %H:%M}"
                f"{f'; held: {held}' if held else ''}; removed {self.removed_runs} runs "
                f"({self.removed_records} records)"
                + (f"; NOT removed, chain broken: {', '.join(self.not_intact)}"
                   if self.not_intact else "")
                + "".join(f"\n  month {month.summary()}" for month in self.months))


def is_due(tenant: Tenant, now: datetime) -> Q:
    """What makes one of the tenant's runs due: closed, and ended before its period began
    (the tenant has one)."""
    assert tenant.retention_days is not None
    return Q(status__in=TERMINAL_RUN_STATUSES,
             ended_at__lt=now - timedelta(days=tenant.retention_days))


def due_runs(tenant: Tenant, now: datetime) -> QuerySet[Run]:
    """Closed runs past the tenant's retention period (none if it keeps everything)."""
    if tenant.retention_days is None:
        return Run.objects.none()
    return (Run.objects.filter(is_due(tenant, now), tenant=tenant)
            .exclude(run_id=GOVERNANCE_RUN_ID))


def held_runs(tenant: Tenant, runs: QuerySet[Run], now: datetime) -> dict[str, set[int]]:
    """Which of ``runs`` each hold source keeps."""
    return {name: set(source(tenant, runs, now)) for name, source in HOLD_SOURCES.items()}


def apply_retention(tenant: Tenant, now: datetime | None = None, *, dry_run: bool = False,
                    batch: int = REMOVAL_BATCH, months: bool = True) -> RetentionReport:
    """Remove the tenant's closed runs past retention that nothing holds, in batches, each with
    its signed removal record and an annotation in the governance log. First, with ``months``,
    the past months only this tenant's due runs were stored in go whole (retention_months)."""
    from .retention_months import remove_due_months

    now = now or timezone.now()
    report = RetentionReport(tenant.slug, None if tenant.retention_days is None else
                             now - timedelta(days=tenant.retention_days))
    if report.cutoff is not None and months:
        report.months = remove_due_months(now, tenant, dry_run=dry_run)
        for month in report.months:
            report.removed_runs += 0 if dry_run else month.runs_by_tenant.get(tenant.slug, 0)
            report.removed_records += month.records
            report.removal_records += month.removal_records.get(tenant.slug, [])
    if report.cutoff is not None and not dry_run:
        _remove_deferred_without_a_run(tenant, report.cutoff)
    due = due_runs(tenant, now)
    report.due = due.count()
    holds = held_runs(tenant, due, now)
    report.held = {name: len(pks) for name, pks in holds.items()}
    if dry_run or not report.due:
        return report
    kept: set[int] = set().union(*holds.values())
    while True:
        removed = _remove_batch(tenant, now, kept, batch, report)
        if not removed:
            return report


@transaction.atomic
def _remove_batch(tenant: Tenant, now: datetime, kept: set[int], batch: int,
                  report: RetentionReport) -> int:
    # The tenant row lock orders this with digest sealing and with holds placed meanwhile.
    Tenant.objects.filter(pk=tenant.pk).lock_rows()
    candidates = due_runs(tenant, now).exclude(pk__in=kept).order_by("pk")
    pks = list(candidates.values_list("pk", flat=True)[:batch])
    if not pks:
        return 0
    late = set().union(*held_runs(tenant, Run.objects.filter(pk__in=pks), now).values())
    broken = not_intact(tenant, pks)
    kept |= late | broken
    report.not_intact += sorted(Run.objects.filter(pk__in=broken).values_list(
        "run_id", flat=True))
    pks = [pk for pk in pks if pk not in late and pk not in broken]
    if not pks:
        return -1  # this batch was all held; the next one starts past it
    record = sign_removal_of(tenant, now, pks)
    _delete_runs(record, pks)
    note_removal(tenant, record)
    report.removed_runs += len(pks)
    report.removed_records += record.records
    report.removal_records.append(record.number)
    return len(pks)


def sign_removal_of(tenant: Tenant, now: datetime, pks: list[int]) -> RemovalRecord:
    """The signed removal record listing the runs ``pks`` at their heads, with their counts
    of records (the run row included)."""
    heads = {run_id: [last_seq, head] for run_id, last_seq, head in Run.objects.filter(
        pk__in=pks).values_list("run_id", "last_seq", "head_hash")}
    counts = _record_counts(pks)
    removed_runs = {run_id: [*head, counts.get(run_id, 0) + 1]
                    for run_id, head in sorted(heads.items())}
    return _sign_removal(tenant, now, removed_runs)


def note_removal(tenant: Tenant, record: RemovalRecord, how: str = "") -> None:
    """What goes with a removal record's runs besides their rows, and its note in the
    governance log."""
    run_ids = sorted(record.removed_runs)
    # What was received for these runs and never placed carries the same content: it goes too.
    DeferredItem.objects.filter(tenant=tenant, run_id__in=run_ids).delete()
    annotate(tenant, AnnotationKind.RETENTION,
             f"Retention removed {len(run_ids)} runs ({record.records} records) that ended "
             f"before {record.cutoff:%Y-%m-%d}{how}; removal record #{record.number}",
             data={"removal_record": record.number, "runs": run_ids[:100],
                   "records": record.records})


def _remove_deferred_without_a_run(tenant: Tenant, cutoff: datetime) -> None:
    """Deferred items of no run (a trace without one, a batch's unknown top-level field)
    received before the cutoff: nothing holds them, and they carry agent content."""
    DeferredItem.objects.filter(tenant=tenant, run_id="", received_at__lt=cutoff).delete()


def not_intact(tenant: Tenant, pks: list[int]) -> set[int]:
    """Those of the runs ``pks`` whose chain does not verify."""
    signed = _verify_digests(tenant, VerifyReport(), governance=False)  # the runs' heads only
    report = verify_scope(tenant, Scope(tenant.pk, None, (min(pks), max(pks))), signed)
    broken = {b.run_id for b in report.breaks}
    return set(pks) & set(Run.objects.filter(tenant=tenant, run_id__in=broken).values_list(
        "pk", flat=True))


def _record_counts(pks: list[int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for model in RECORD_MODELS:
        rows = model.objects.filter(run__in=pks).values("run__run_id").annotate(
            n=models.Count("pk")).values_list("run__run_id", "n")
        for run_id, n in rows:
            counts[run_id] = counts.get(run_id, 0) + n
    return counts


def _sign_removal(tenant: Tenant, now: datetime, removed_runs: dict[str, list[Any]]
                  ) -> RemovalRecord:
    last = RemovalRecord.objects.filter(tenant=tenant).order_by("-number").first()
    assert tenant.retention_days is not None
    record = RemovalRecord(
        tenant=tenant, number=(last.number + 1) if last else 1, removed_at=now,
        cutoff=now - timedelta(days=tenant.retention_days),
        retention_days=tenant.retention_days, removed_runs=removed_runs,
        records=sum(run[2] for run in removed_runs.values()),
        previous_hash=last.record_hash if last else GENESIS)
    content = record.signed_content(tenant.slug)
    record.record_hash = content_hash(content)
    record.public_key = signing.public_key_b64()
    record.key_id = signing.key_id(record.public_key)
    record.signature = signing.sign(canonical_json(content))
    record.save()
    return record


def _delete_runs(record: RemovalRecord, pks: list[int]) -> None:
    """The one place ledger rows are deleted. On PostgreSQL the application's role may not
    delete them at all: ``ledger_remove_runs`` (migration 0021, owned by the tables' owner)
    applies the signed removal record, checking every run it lists. Elsewhere the ORM refuses
    on purpose, so this is SQL."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT ledger_remove_runs(%s)", [record.pk])
            return
        marks = ", ".join(["%s"] * len(pks))
        # The raw OpenTelemetry spans a run was assembled from carry the same content
        # (messages, tool arguments and results) unredacted: they go with the run.
        traces_of_runs = (f"SELECT t.id FROM {OtlpTrace._meta.db_table} t "  # noqa: S608
                          f"JOIN {Run._meta.db_table} r ON r.tenant_id = t.tenant_id "
                          f"AND r.run_id = t.run_id WHERE r.id IN ({marks})")
        cursor.execute(f"DELETE FROM {OtlpSpan._meta.db_table} "  # noqa: S608
                       f"WHERE trace_id IN ({traces_of_runs})", pks)
        cursor.execute(f"DELETE FROM {OtlpEvent._meta.db_table} "  # noqa: S608
                       f"WHERE tenant_id = %s AND 'otel-' || trace_id IN (SELECT run_id "
                       f"FROM {Run._meta.db_table} WHERE id IN ({marks}))",
                       [record.tenant_id, *pks])
        cursor.execute(f"DELETE FROM {OtlpTrace._meta.db_table} "  # noqa: S608
                       f"WHERE id IN ({traces_of_runs})", pks)
        for model in (*RECORD_MODELS[::-1], Run):
            column = "id" if model is Run else "run_id"
            cursor.execute(f"DELETE FROM {model._meta.db_table} "  # noqa: S608
                           f"WHERE {column} IN ({marks})", pks)


# -- legal holds --------------------------------------------------------------------------------

# Hold notes go to the governance log: the held run itself may be removed once released.
@transaction.atomic
def place_legal_hold(tenant: Tenant, *, by: Actor, reason: str, run_id: str = "") -> LegalHold:
    from django.core.exceptions import PermissionDenied, ValidationError

    if not reason.strip():
        raise ValidationError("a legal hold needs a reason (the matter or ticket it is for)")
    # The tenant row first, as retention takes it: a removal batch either finishes before
    # (the run is gone, and the hold is refused below) or sees this hold; never a deadlock.
    Tenant.objects.filter(pk=tenant.pk).lock_rows()
    if run_id and not Run.objects.filter(tenant=tenant, run_id=run_id).exists():
        raise ValidationError(f"no run {run_id!r} in {tenant.slug}")
    placer = person_of(by)
    if placer is None:
        raise PermissionDenied("a legal hold is placed by a person, not by an API key")
    hold = LegalHold.objects.create(tenant=tenant, run_id=run_id, reason=reason,
                                    placed_by=placer)
    annotate(tenant, AnnotationKind.RETENTION,
             f"Legal hold #{hold.pk} placed on {run_id or 'every run'}: {reason}",
             by=by, data={"legal_hold": hold.pk, "run_id": run_id})
    return hold


@transaction.atomic
def release_legal_hold(hold: LegalHold, *, by: Actor) -> LegalHold:
    from django.core.exceptions import ValidationError

    Tenant.objects.filter(pk=hold.tenant_id).lock_rows()  # as placing does
    hold = LegalHold.objects.select_for_update().get(pk=hold.pk)
    if not hold.active:
        raise ValidationError(f"legal hold #{hold.pk} was already released")
    hold.released_at, hold.released_by = timezone.now(), person_of(by)
    hold.save(update_fields=["released_at", "released_by"])
    annotate(hold.tenant, AnnotationKind.RETENTION,
             f"Legal hold #{hold.pk} on {hold.run_id or 'every run'} released",
             by=by, data={"legal_hold": hold.pk, "run_id": hold.run_id})
    return hold


# -- the ledger's own hold sources --------------------------------------------------------------

def _legal_holds(tenant: Tenant, runs: QuerySet[Run], now: datetime) -> Any:
    active = LegalHold.objects.filter(tenant=tenant, released_at__isnull=True)
    if active.filter(run_id="").exists():
        return runs.values_list("pk", flat=True)
    return runs.filter(run_id__in=active.values("run_id")).values_list("pk", flat=True)


def _linked(tenant: Tenant, runs: QuerySet[Run], now: datetime) -> set[int]:
    held: set[int] = set()
    for target, to_run in ((Run, ""), *((model, "__run") for model in RECORD_MODELS)):
        for rel in target._meta._get_fields(forward=False, reverse=True, include_hidden=True):
            source: Any = rel.related_model
            if not isinstance(rel, ForeignObjectRel) or source in RECORD_MODELS:
                continue  # a run's own records point at it (and at each other): its chain
            path = f"{rel.field.name}{to_run}"
            held |= set(source._base_manager.filter(**{f"{path}__in": runs})
                        .values_list(path, flat=True))
    return held


register_hold_source("legal hold", _legal_holds)
register_hold_source("linked", _linked)
