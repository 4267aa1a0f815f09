"""Governance records under the digests: policy decisions, what each approval request asked
for, and votes.

They are not run records, so they have no chain of their own. Each tenant digest seals, per
kind, the records added since the previous digest (by id, those created before the settle time,
so a transaction still in flight is left to the next): their count and a rolling hash of their
content, chained from the previous digest's. `ledger verify` recomputes them from the database,
so a sealed record changed, removed or slipped in afterwards is named; it also checks what the
sealed records say of the approval requests' state (an approved request has its votes, a
consumed one the decision that consumed it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist
from django.db import connection, transaction
from django.db.models import (
    Count,
    DateTimeField,
    F,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextField,
)
from django.db.models.expressions import RawSQL
from django.utils import timezone

from core.canonical import (
    GENESIS,
    canonical_timestamp,
    chain_hash,
    content_hash,
)
from core.models import Tenant

from . import integrity_fast

#: Records created this recently are sealed by the next digest (their transaction may not have
#: committed yet, and ids are handed out before commit).
GOVERNANCE_SETTLE = timedelta(seconds=60)


@dataclass(frozen=True)
class Kind:
    label: str
    fields: tuple[str, ...]  # what never changes once written
    tenant_path: str = "tenant"

    def rows(self, tenant_id: int) -> QuerySet[Any]:
        model = apps.get_model(self.label)
        records: QuerySet[Any] = model._default_manager.all()
        if "__" not in self.tenant_path:
            return records.filter(**{f"{self.tenant_path}_id": tenant_id})
        # Through the parent (a vote's request) as a subquery on each record, never a join:
        # joined, PostgreSQL may drive from the parent and AND a bitmap of the id range into
        # every probe, quadratic when its statistics are stale (after a bulk load or a restore,
        # before ANALYZE: 0.7 s for 5,000 votes, 11 s for 20,000). The subquery is one index
        # lookup a record, whatever the statistics say.
        relation, owner = self.tenant_path.split("__", 1)
        parent: Any = model._meta.get_field(relation).related_model
        tenant_of = Subquery(parent._default_manager.filter(pk=OuterRef(f"{relation}_id"))
                             .order_by().values(f"{owner}_id")[:1])
        owned: QuerySet[Any] = records.alias(_tenant_id=tenant_of).filter(_tenant_id=tenant_id)
        return owned


KINDS = (
    Kind("policies.Decision", (
        "id", "tenant_id", "run_id", "call_id", "agent_id", "tool", "action_class",
        "declared_action_class", "mode", "input", "effect", "reason", "policy_version_id",
        "matched_rules", "engine", "engine_answers", "latency_us", "replay_id", "approval_id",
        "exception_id", "decided_by", "created_at")),
    Kind("approvals.ApprovalRequest", (
        "id", "tenant_id", "kind", "run_id", "call_id", "agent_id", "tool", "action_class",
        "arguments", "action_hash", "matched_rules", "requested_by", "approvals_needed",
        "created_at", "policy_version_id", "requester_id", "policy_checksum",
        "requester_key_id")),
    Kind("approvals.Vote", ("id", "request_id", "approver_id", "approve", "justification",
                            "created_at"), tenant_path="request__tenant"),
)


def record_hash(kind: Kind, row: dict[str, Any]) -> str:
    content: dict[str, Any] = {"kind": kind.label}
    for name in kind.fields:
        value = row[name]
        content[name] = canonical_timestamp(value) if isinstance(value, datetime) else value
    return content_hash(content)


def _roll(kind: Kind, tenant_id: int, after: int, upto: int, head: str,
          sealing: bool = False) -> tuple[int, str]:
    count = 0
    rows = kind.rows(tenant_id).filter(pk__gt=after, pk__lte=upto).order_by("pk")
    if connection.vendor == "postgresql":
        return _roll_built(kind, rows, head, sealing)
    for row in rows.values(*kind.fields).iterator(chunk_size=2000):
        head = chain_hash(head, row["id"], record_hash(kind, row))
        count += 1
    return count, head


def content_columns(kind: Kind) -> tuple[list[str], integrity_fast.ColumnContent]:
    """The SQL (PostgreSQL) of each of ``kind.fields`` as ``record_hash`` sees it, timestamps
    in the canonical text form and JSON columns as their text; and how to hash what they read
    (the bytes ``record_hash`` hashes)."""
    model = apps.get_model(kind.label)
    table = connection.ops.quote_name(model._meta.db_table)
    columns: list[str] = []
    json_at: list[int] = []
    for position, name in enumerate(kind.fields):
        field: Any = _field(model, name)
        column = f"{table}.{connection.ops.quote_name(field.column)}"
        if isinstance(field, DateTimeField):
            column = f"to_char({column} AT TIME ZONE 'UTC', {integrity_fast.CANONICAL_TS})"
        elif isinstance(field, JSONField):
            column = f"{column}::text"
            json_at.append(position)
        columns.append(column)
    return columns, integrity_fast.ColumnContent(kind.label, kind.fields, tuple(json_at))


def _field(model: Any, name: str) -> Any:
    """A model field by its name or, for a foreign key, its column's (``policy_version_id``)."""
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        if not name.endswith("_id"):
            raise
        return model._meta.get_field(name[:-3])


def built_rows(kind: Kind, rows: QuerySet[Any]
               ) -> Generator[tuple[Any, ...], None, None]:
    """``rows`` of ``kind`` (PostgreSQL, in the caller's transaction) as ``content_columns``
    gives them (``kind.fields`` in order, the id first), through a plain named cursor fetching
    the next chunk while these are hashed: the queryset's own SQL (its tenant scope), none of
    the ORM's per-row work."""
    columns, _ = content_columns(kind)
    built = rows.annotate(**{f"_c{position}": RawSQL(column, [],  # noqa: S611
                                                     output_field=TextField())
                             for position, column in enumerate(columns)})
    sql, params = built.values_list(*(f"_c{i}" for i in range(len(columns)))).query \
        .sql_with_params()
    model_name = apps.get_model(kind.label)._meta.model_name
    yield from integrity_fast.rows_fetched_ahead(f"governance_{model_name}", sql, list(params))


def _roll_built(kind: Kind, rows: QuerySet[Any], head: str, sealing: bool
                ) -> tuple[int, str]:
    """``_roll`` on PostgreSQL: each record's columns as ``content_columns`` gives them, then
    ``orjson`` and sha256 (``integrity_fast.ColumnContent``: the same bytes as
    ``record_hash``)."""
    count = 0
    sha256, unverifiable = hashlib.sha256, integrity_fast.UNVERIFIABLE
    hashed = content_columns(kind)[1].hashed
    # A named cursor lives in a transaction (a savepoint in verify's), closed before its end.
    with transaction.atomic(), closing(built_rows(kind, rows)) as records:
        for row in records:
            pk = row[0]
            digest = hashed(row)[0]
            if digest == unverifiable and sealing:
                # As record_hash would: what cannot be written canonically is never sealed.
                raise ValueError(f"{kind.label} {pk}: its content has no canonical form")
            head = sha256(f"{head}:{pk}:{digest}".encode()).hexdigest()
            count += 1
    return count, head


def _oldest_open_write() -> datetime:
    """When the oldest transaction that has written and not committed began (on PostgreSQL):
    a record it holds has an id already, so nothing created after that is sealed yet."""
    far = timezone.now() + timedelta(days=3650)
    if connection.vendor != "postgresql":
        return far  # SQLite: one writer at a time, and this one is the sealer
    with connection.cursor() as cursor:
        cursor.execute("SELECT min(xact_start) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND backend_xid IS NOT NULL AND pid <> "
                       "pg_backend_pid()")
        oldest = cursor.fetchone()[0]
    return oldest or far


def seal(tenant: Tenant, previous: dict[str, Any], settled_before: datetime | None = None
         ) -> dict[str, Any]:
    """Each kind's {upto, count, head} for the next digest (carried over where nothing new)."""
    settled_before = min(settled_before or timezone.now() - GOVERNANCE_SETTLE,
                         _oldest_open_write())
    sealed: dict[str, Any] = {}
    for kind in KINDS:
        before = previous.get(kind.label, {"upto": 0, "count": 0, "head": GENESIS})
        upto = (kind.rows(tenant.pk).filter(pk__gt=before["upto"], created_at__lt=settled_before)
                .order_by("-pk").values_list("pk", flat=True).first())
        if upto is None:
            sealed[kind.label] = before
            continue
        count, head = _roll(kind, tenant.pk, before["upto"], upto, before["head"],
                            sealing=True)
        sealed[kind.label] = {"upto": upto, "count": before["count"] + count, "head": head}
    return sealed


def check(tenant: Tenant, digests: list[tuple[int, dict[str, Any]]]) -> list[tuple[str, str]]:
    """Problems with the sealed governance records, as (kind label, what): ``digests`` are
    (number, governance) in order."""
    problems: list[tuple[str, str]] = []
    for kind in KINDS:
        before: dict[str, Any] = {"upto": 0, "count": 0, "head": GENESIS}
        for number, governance in digests:
            sealed = governance.get(kind.label)
            if not sealed or sealed == before:
                continue
            count, head = _roll(kind, tenant.pk, before["upto"], sealed["upto"], before["head"])
            if (before["count"] + count, head) != (sealed["count"], sealed["head"]):
                changed = before["count"] + count - sealed["count"]
                what = ("removed" if changed < 0 else "inserted" if changed > 0 else "modified")
                problems.append((kind.label, f"{what}: the {kind.label} records up to id "
                                 f"{sealed['upto']} differ from what digest #{number} sealed "
                                 f"({sealed['count']} records; now {before['count'] + count})"))
                break
            before = sealed
    return problems + state_contradictions(tenant)


def state_contradictions(tenant: Tenant) -> list[tuple[str, str]]:
    """An approval request's state (it moves, so it is not sealed) checked against the sealed
    records that decided it."""
    requests = apps.get_model("approvals.ApprovalRequest")._default_manager.filter(
        tenant_id=tenant.pk)
    problems = []
    unsupported = requests.filter(status="approved").annotate(
        approving=Count("votes", filter=Q(votes__approve=True))).exclude(
        approving__gte=F("approvals_needed"))
    for pk in unsupported.values_list("pk", flat=True):
        problems.append(("approvals.ApprovalRequest",
                         f"modified: request {pk} says approved without the votes it needs"))
    for pk, decision in requests.filter(consumed_by__isnull=False).exclude(
            consumed_by__approval_id=F("pk")).values_list("pk", "consumed_by_id"):
        problems.append(("approvals.ApprovalRequest",
                         f"modified: request {pk} says decision {decision} consumed it; that "
                         "decision names another approval"))
    return problems
