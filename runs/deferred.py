"""The reconciliation queue: keep, list, apply and dismiss deferred items.

One service for every face (admin actions, the API, ``ledger reconcile``). Applying re-runs the
current mapping over an item and records what now maps as new chained records through
``ingest_batch``, with a note on the run saying so, exactly once: the item is claimed by a
conditional update in the same transaction (a second reconciler, in this process or another,
finds it taken), and the records' external ids are derived from the item, so even a replayed
batch would be idempotent. Applying and dismissing need the ``operate`` role on the tenant.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, QuerySet
from django.utils import timezone
from pydantic import ValidationError as PydanticInvalid

from core.actors import Actor, Viewer, label_of, person_of
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role

from .annotations import annotate
from .deferred_batch import CHILD_MODELS, DeferredIn, batch_item_now_maps
from .ingest import BatchRejected, ingest_batch
from .ingest_schema import AnnotationIn, BatchIn, RunIn
from .models import (
    AnnotationKind,
    DeferredItem,
    DeferredReason,
    DeferredSource,
    DeferredStatus,
    Run,
    RunStatus,
)

#: What the timeline and the notes call deferred data: the runbook's words.
DEFERRED_WORDS = "Deferred pending ledger schema reconciliation"
#: The list columns a face shows (the payload only on a detail).
ITEM_FIELDS = ("id", "tenant_id", "source", "reason_code", "reason", "run_id", "status",
               "received_at", "received_by", "resolved_by_label", "resolved_at",
               "justification", "applied_records")


def keep_deferred(tenant: Tenant, items: Sequence[DeferredIn], received_by: str = "") -> int:
    """Store ``items`` in the caller's transaction; an item already kept (the same key, a
    retried request) is not added twice. Returns how many were given."""
    DeferredItem.objects.bulk_create([
        DeferredItem(tenant=tenant, source=d.source, reason_code=d.reason_code,
                     reason=d.reason[:5000], payload=d.payload, run_id=d.run_id[:200],
                     key=d.key[:300], received_by=received_by[:200])
        for d in items], ignore_conflicts=True)
    return len(items)


def keep_chain_gaps(tenant: Tenant, breaks: Iterable[Any], found_by: str = "") -> int:
    """Records ``ledger verify`` found missing from a chain (``Break``s of problem
    ``missing``), as deferred items on their runs: the data is gone from the ledger, and
    the gap waits for someone to account for it (the break itself is tampering's evidence,
    reported by verify as before)."""
    gaps = [DeferredIn(
        DeferredSource.CHAIN_GAP, DeferredReason.CHAIN_GAP,
        f"run {b.run_id}" + (f" seq {b.seq}" if b.seq is not None else "")
        + f": missing from the chain ({b.detail})",
        {"run_id": b.run_id, "seq": b.seq, "problem": b.problem, "detail": b.detail},
        b.run_id, f"chain-gap:{b.run_id}:{b.seq}") for b in breaks if b.problem == "missing"]
    return keep_deferred(tenant, gaps, found_by)


def deferred_for(user: Viewer, tenant: str | None = None, status: str | None = None,
                 source: str | None = None, run_id: str | None = None
                 ) -> QuerySet[DeferredItem]:
    """The items ``user`` may see (view_ledger), newest first, narrowed as asked."""
    items = DeferredItem.objects.for_user(user, Role.VIEW_LEDGER)
    if tenant:
        items = items.filter(tenant__slug=tenant)
    if status:
        items = items.filter(status=status)
    if source:
        items = items.filter(source=source)
    if run_id:
        items = items.filter(run_id=run_id)
    return items.order_by("-id")


def pending_counts(user: Viewer) -> list[tuple[str, int, int]]:
    """Pending items per tenant the user sees, most first: (tenant slug, tenant id, count)."""
    rows = (DeferredItem.objects.for_user(user, Role.VIEW_LEDGER)
            .filter(status=DeferredStatus.PENDING).values("tenant__slug", "tenant_id")
            .annotate(n=Count("id")).order_by("-n", "tenant__slug"))
    return [(row["tenant__slug"], row["tenant_id"], row["n"]) for row in rows]


def pending_on_run(tenant_id: int, run_id: str, limit: int = 20
                   ) -> tuple[int, list[dict[str, Any]]]:
    """How many of the run's items are pending, and the first ``limit`` of them (for its
    timeline): id, source, code and reason."""
    rows = DeferredItem.objects.filter(
        tenant_id=tenant_id, run_id=run_id, status=DeferredStatus.PENDING).order_by("id")
    first = [dict(row) for row in rows.values("id", "source", "reason_code", "reason")[:limit]]
    return (len(first) if len(first) < limit else rows.count()), first


def shown_item(viewers: Any, row: dict[str, Any]) -> dict[str, Any]:
    """An item's row as its reader may see it (``viewers``: a ``ViewersByTenant``)."""
    shown: dict[str, Any] = viewers(row["tenant_id"]).redact_row("deferred_item", row,
                                                                 commit=False)
    return shown


def _may_operate(item: DeferredItem, *, by: Actor) -> None:
    if not has_role(by, Role.OPERATE, item.tenant_id):
        raise PermissionDenied("resolving deferred items needs the operate role on "
                               f"{item.tenant.slug}")


# -- dismissing ------------------------------------------------------------------------------


@transaction.atomic
def dismiss_deferred(item: DeferredItem, *, by: Actor, justification: str) -> DeferredItem:
    """Mark a pending item dismissed, with why; noted on its run (or the governance log)."""
    _may_operate(item, by=by)
    justification = (justification or "").strip()
    if not justification:
        raise ValidationError("a dismissal needs a justification")
    now = timezone.now()
    claimed = DeferredItem.objects.filter(pk=item.pk, status=DeferredStatus.PENDING).update(
        status=DeferredStatus.DISMISSED, resolved_at=now, resolved_by=person_of(by),
        resolved_by_label=label_of(by), justification=justification)
    if not claimed:
        raise ValidationError(f"deferred item {item.pk} is no longer pending")
    annotate(item.tenant, AnnotationKind.NOTE,
             f"Deferred item {item.pk} ({item.reason_code}) dismissed: {justification}",
             run_id=item.run_id, by=by,
             data={"deferred_item": item.pk, "reason_code": item.reason_code,
                   "justification": justification})
    item.refresh_from_db()
    return item


# -- applying --------------------------------------------------------------------------------


@dataclass
class ApplyOutcome:
    item_id: int
    outcome: str  # applied | still_deferred | taken
    detail: str = ""
    records: list[dict[str, str]] = field(default_factory=list)


class _StillDeferred(Exception):
    """The item does not map yet: the claim is rolled back and it stays pending."""


def apply_deferred(item: DeferredItem, *, by: Actor) -> ApplyOutcome:
    """Map ``item`` with the current mapping and record what it becomes, exactly once."""
    _may_operate(item, by=by)
    try:
        with transaction.atomic():
            claimed = DeferredItem.objects.filter(
                pk=item.pk, status=DeferredStatus.PENDING).update(
                status=DeferredStatus.APPLIED, resolved_at=timezone.now(),
                resolved_by=person_of(by), resolved_by_label=label_of(by))
            if not claimed:
                return ApplyOutcome(item.pk, "taken", "already applied or dismissed")
            item = DeferredItem.objects.select_related("tenant").get(pk=item.pk)
            records = _record_mapped(item, by=by)
            DeferredItem.objects.filter(pk=item.pk).update(applied_records=records)
    except (_StillDeferred, BatchRejected) as still:
        return ApplyOutcome(item.pk, "still_deferred", str(still))
    except PydanticInvalid as invalid:  # the stored run and the item no longer fit together
        return ApplyOutcome(item.pk, "still_deferred", f"not a valid record: {invalid}"[:500])
    return ApplyOutcome(item.pk, "applied", records=records)


def reconcile(user: Actor, tenant: str | None = None, limit: int = 1000
              ) -> list[ApplyOutcome]:
    """Apply every pending item ``user`` may operate on (in ``tenant``), oldest first."""
    items = DeferredItem.objects.for_user(user, Role.OPERATE).filter(
        status=DeferredStatus.PENDING).select_related("tenant").order_by("id")
    if tenant:
        items = items.filter(tenant__slug=tenant)
    return [apply_deferred(item, by=user) for item in items[:limit]]


def _record_mapped(item: DeferredItem, *, by: Actor) -> list[dict[str, str]]:
    if item.source == DeferredSource.BATCH:
        return _record_batch_item(item, by=by)
    if item.source == DeferredSource.OTLP_SPAN:
        if item.reason_code == DeferredReason.TRACE_WITHOUT_RUN:
            return _record_trace_item(item, by=by)
        return _record_span_item(item, by=by)
    raise _StillDeferred("a gap is not a mapping problem: nothing to record; dismiss it with "
                         "a justification once it is understood")


def _record_span_item(item: DeferredItem, *, by: Actor) -> list[dict[str, str]]:
    from .otlp.deferral import span_now_maps

    mapped = span_now_maps(item)
    if mapped is None:
        raise _StillDeferred("the span still maps to no ledger record")
    _, header = _stored_header(item)
    return _ingest(item, header, mapped, by=by)


def _record_trace_item(item: DeferredItem, *, by: Actor) -> list[dict[str, str]]:
    """A trace that recorded no run: its run, from every span in the buffer, if it maps now."""
    from .otlp.deferral import trace_now_maps

    run = trace_now_maps(item)
    if run is None:
        raise _StillDeferred("the trace still has no span that maps to a run")
    DeferredItem.objects.filter(pk=item.pk).update(run_id=run.run_id)
    made = [{"kind": "run", "id": run.run_id}]
    note = _applied_note(item, made)
    ingest_batch(item.tenant, BatchIn(runs=[run.model_copy(update={
        "annotations": [*run.annotations, note]})]), recorded_by=label_of(by),
        for_agents=getattr(by, "agent_ids", None))
    return [*made, {"kind": "annotation", "id": note.annotation_id}]


def _stored_header(item: DeferredItem) -> tuple[Run, dict[str, Any]]:
    run = Run.objects.filter(tenant=item.tenant, run_id=item.run_id).select_related(
        "agent").first()
    if run is None:
        raise _StillDeferred(f"run {item.run_id!r} is not in the ledger")
    return run, {"run_id": run.run_id, "agent_id": run.agent.agent_id,
                 "agent_name": run.agent.name, "goal": run.goal, "trigger_ref": run.trigger_ref,
                 "started_at": run.started_at, "metadata": run.metadata,
                 "status": run.status, "ended_at": run.ended_at}


def _record_batch_item(item: DeferredItem, *, by: Actor) -> list[dict[str, str]]:
    payload = item.payload
    if not batch_item_now_maps(payload):
        raise _StillDeferred("this portal's schema still does not take it")
    kind, record = payload["kind"], payload["record"]
    if kind in CHILD_MODELS and item.reason_code == "unknown_value":
        run, header = _stored_header(item)
        return _ingest(item, header, {kind: [record]}, by=by)
    if kind == "run_end":
        run, header = _stored_header(item)
        if run.status != RunStatus.RUNNING:
            raise _StillDeferred(f"run {run.run_id!r} already ended as {run.status}")
        return _ingest(item, {**header, **record}, {}, by=by)
    # Unknown fields now known: the record landed without them and ledger rows are never
    # updated, so they are chained as a correction naming the record.
    target = record.get("call_id", "") if isinstance(record, dict) else ""
    if item.run_id:
        run, header = _stored_header(item)
        return _ingest(item, header, {}, by=by, correction={
            "target_call_id": target, "data": {"record_path": payload["path"],
                                               "fields": payload.get("unknown", {})}})
    note = annotate(item.tenant, AnnotationKind.CORRECTION,
                    f"{DEFERRED_WORDS}: deferred item {item.pk} applied",
                    by=by, data={"deferred_item": item.pk, "fields": payload.get("unknown")})
    return [{"kind": "annotation", "id": note.annotation_id}]


def _ingest(item: DeferredItem, header: dict[str, Any],
            records: dict[str, list[Any]], correction: dict[str, Any] | None = None, *, by: Actor
            ) -> list[dict[str, str]]:
    """Record ``records`` on the item's run with a note saying where they came from."""
    made = [{"kind": kind.rstrip("s"), "id": r.get("call_id") or r.get("step_id")
             or r.get("annotation_id", "")} for kind, rows in records.items() for r in rows]
    note = _applied_note(item, made, correction)
    run = RunIn.model_validate({**header, **records,
                                "annotations": [*records.get("annotations", []), note]})
    # A key bound to agents applies only their items (BatchForbidden: still deferred).
    ingest_batch(item.tenant, BatchIn(runs=[run]), recorded_by=label_of(by),
                 for_agents=getattr(by, "agent_ids", None), reconciling=True)
    return [*made, {"kind": "annotation", "id": note.annotation_id}]


def _applied_note(item: DeferredItem, made: list[dict[str, str]],
                  correction: dict[str, Any] | None = None) -> AnnotationIn:
    """The note chained with what an item became: which item, received when, as what."""
    return AnnotationIn(
        annotation_id=f"deferred-{item.pk}-applied",
        kind="correction" if correction else "note",
        target_call_id=(correction or {}).get("target_call_id", ""),
        body=f"{DEFERRED_WORDS}: deferred item {item.pk} ({item.reason_code}, received "
             f"{item.received_at:%Y-%m-%d %H:%M:%S} UTC) applied"
             + (f"; became {', '.join(m['kind'] + ' ' + m['id'] for m in made)}"
                if made else ""),
        data={"deferred_item": item.pk, "reason_code": item.reason_code, "records": made,
              **(correction or {}).get("data", {})})


def items_by_pk(user: Viewer, pks: Iterable[int]) -> QuerySet[DeferredItem]:
    return DeferredItem.objects.for_user(user, Role.VIEW_LEDGER).filter(
        pk__in=list(pks)).select_related("tenant")
