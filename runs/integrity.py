"""Tamper evidence: sealing tenant digests and verifying chains against them.

``verify_tenant`` streams every record of a tenant (or one run) in chain order, recomputes each
content hash and link, and names the first broken link of each run and what is wrong:

- ``modified``: a record's content (or its stored hashes) no longer match;
- ``missing``: a sequence number has no record, or the chain ends before the head says;
- ``inserted``: a record that no link accounts for (a duplicate or out-of-range seq);
- ``reordered``: a record sits at another record's position;
- ``digest``: the run's head disagrees with what a signed digest recorded, or a digest itself
  is forged, re-signed with an unknown key, or missing from the digest chain.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from core import signing
from core.canonical import GENESIS, canonical_json, chain_hash, content_hash
from core.models import Tenant

from . import governance_seal, integrity_fast, integrity_fetch
from .models import (
    Annotation,
    AnnotationKind,
    IntegrityAlarm,
    ModelCall,
    RemovalRecord,
    Run,
    RunStatus,
    Step,
    TenantDigest,
    ToolCall,
)
from .models.base import content_of

RECORD_MODELS = (Step, ModelCall, ToolCall, Annotation)
# Transactions in flight when a digest is sealed may commit a tip that moved just before it:
# each digest looks back this far past the previous one, so no head is ever left out.
DIGEST_OVERLAP = timedelta(minutes=5)


@dataclass
class Break:
    run_id: str
    seq: int | None
    problem: str  # modified | missing | inserted | reordered | digest
    detail: str

    def __str__(self) -> str:
        where = f"run {self.run_id}" + (f" seq {self.seq}" if self.seq is not None else "")
        return f"{where}: {self.problem}: {self.detail}"


@dataclass
class VerifyReport:
    runs: int = 0
    records: int = 0
    digests: int = 0
    removed_runs: int = 0  # signed by a digest, then removed by retention (accounted for)
    workers: int = 1  # the processes that checked the chains
    breaks: list[Break] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks


# -- digests ----------------------------------------------------------------------------------

def trusted_public_keys() -> set[str]:
    return {signing.public_key_b64(), *getattr(settings, "LEDGER_PREVIOUS_PUBLIC_KEYS", [])}


@transaction.atomic
def seal_tenant_digest(tenant: Tenant, governance_settled_before: datetime | None = None
                       ) -> TenantDigest | None:
    """Sign the heads of the runs whose chains moved since the last digest (None if none did).

    A head that contradicts what an earlier digest signed for its run (the same seq with
    another hash, an earlier seq, or a chain that no longer passes through the signed head) is
    never signed: signing it would launder a rewrite. It raises an ``IntegrityAlarm`` instead,
    and the digests keep vouching for the head they signed."""
    Tenant.objects.filter(pk=tenant.pk).lock_rows()  # one sealer per tenant
    last = TenantDigest.objects.filter(tenant=tenant).order_by("-number").first()
    now = timezone.now()
    runs = Run.objects.filter(tenant=tenant)
    if last is not None:
        runs = runs.filter(tip_moved_at__gte=last.covered_until - DIGEST_OVERLAP)
    heads = {run_id: [last_seq, head] for run_id, last_seq, head in
             runs.order_by("run_id").values_list("run_id", "last_seq", "head_hash")}
    if last is not None:
        for run_id in _contradicting_heads(tenant, heads):
            del heads[run_id]
    governance = governance_seal.seal(tenant, last.governance if last else {},
                                      governance_settled_before)
    if last is not None and all(last.run_heads.get(k) == v for k, v in heads.items()) \
            and governance == last.governance:
        return None
    digest = TenantDigest(tenant=tenant, number=(last.number + 1) if last else 1,
                          created_at=now, covered_until=now, run_heads=heads,
                          governance=governance,
                          previous_hash=last.digest_hash if last else GENESIS)
    body = canonical_json(digest.signed_content(tenant.slug))
    digest.digest_hash = content_hash(digest.signed_content(tenant.slug))
    digest.public_key = signing.public_key_b64()
    digest.key_id = signing.key_id(digest.public_key)
    digest.signature = signing.sign(body)
    digest.save()
    return digest


def _last_signed_heads(tenant: Tenant, run_ids: Iterable[str]) -> dict[str, tuple[int, str, int]]:
    """run_id -> (last_seq, head, digest number) as the newest digest that names it signed."""
    wanted = set(run_ids)
    found: dict[str, tuple[int, str, int]] = {}
    if not wanted:
        return found
    digests = TenantDigest.objects.filter(tenant=tenant, run_heads__has_any_keys=list(wanted)
                                          ).order_by("-number").values_list("number",
                                                                            "run_heads")
    for number, run_heads in digests.iterator():
        for run_id in wanted & run_heads.keys():
            last_seq, head = run_heads[run_id]
            found[run_id] = (last_seq, head, number)
        wanted -= found.keys()
        if not wanted:
            break
    return found


def _contradicting_heads(tenant: Tenant, heads: dict[str, list[Any]]) -> list[str]:
    """The runs of ``heads`` whose head contradicts what a digest signed; each one raises an
    alarm (once per forged head)."""
    signed = _last_signed_heads(tenant, heads)
    moved = {run_id: signed[run_id] for run_id, (seq, _) in heads.items()
             if run_id in signed and seq > signed[run_id][0]}
    stored = _stored_links(tenant, moved)
    bad = []
    for run_id, (seq, head) in heads.items():
        if run_id not in signed:
            continue
        signed_seq, signed_head, number = signed[run_id]
        if seq < signed_seq:
            detail = (f"the head is at seq {seq}, before seq {signed_seq} that digest "
                      f"#{number} signed (records dropped from the tail)")
        elif seq == signed_seq and head != signed_head:
            detail = (f"the head at seq {seq} differs from what digest #{number} signed "
                      "(rewritten with recomputed hashes)")
        elif seq > signed_seq and stored.get(run_id) != signed_head:
            detail = (f"the chain no longer passes through the head digest #{number} signed "
                      f"at seq {signed_seq} (rewritten, then extended)")
        else:
            continue
        bad.append(run_id)
        IntegrityAlarm.objects.bulk_create([IntegrityAlarm(
            tenant=tenant, run_id=run_id, seq=seq, found_head=head, signed_seq=signed_seq,
            signed_head=signed_head, digest_number=number, detail=detail)],
            ignore_conflicts=True)
    return bad


def _stored_links(tenant: Tenant, at: dict[str, tuple[int, str, int]]) -> dict[str, str]:
    """run_id -> the chain hash stored at the seq given for it (the run record is seq 0)."""
    links: dict[str, str] = {}
    if not at:
        return links
    runs = Run.objects.filter(tenant=tenant, run_id__in=list(at))
    links.update((run_id, link) for run_id, link in runs.values_list("run_id", "chain_hash")
                 if at[run_id][0] == 0)
    for model in RECORD_MODELS:
        rows = model.objects.filter(tenant=tenant, run__run_id__in=list(at),
                                    seq__in={seq for seq, _, _ in at.values()})
        links.update((run_id, link) for run_id, seq, link in
                     rows.values_list("run__run_id", "seq", "chain_hash")
                     if at[run_id][0] == seq)
    return links


def _signed_chain(rows: Iterable[Any], tenant: Tenant, label: str, hash_field: str,
                  report: VerifyReport) -> Iterator[Any]:
    """The rows of a signed, numbered chain (digests, removal records) that can be trusted;
    each one that cannot is reported as a ``digest`` break and skipped."""
    trusted = trusted_public_keys()
    previous, expected_number = GENESIS, 1
    for row in rows:
        content = row.signed_content(tenant.slug)
        where = f"{label} #{row.number}"
        problem = None
        if row.number != expected_number:
            problem = f"{label} #{expected_number} is missing before {where}"
        elif row.previous_hash != previous:
            problem = f"{where} does not follow the {label} before it"
        elif content_hash(content) != getattr(row, hash_field):
            problem = f"{where} was modified"
        elif row.public_key not in trusted:
            problem = f"{where} is signed with an unknown key {row.key_id}"
        elif not signing.verify_signature(row.public_key, canonical_json(content),
                                          row.signature):
            problem = f"{where} has a bad signature"
        previous, expected_number = getattr(row, hash_field), row.number + 1
        if problem is not None:  # an untrustworthy record vouches for nothing
            report.breaks.append(Break("*", None, "digest", problem))
            continue
        yield row


#: run_id -> every distinct head the digests signed for it, oldest first: (last_seq, head,
#: digest number)
SignedHeads = dict[str, list[tuple[int, str, int]]]


def _verify_digests(tenant: Tenant, report: VerifyReport, governance: bool = True
                    ) -> SignedHeads:
    """Check the digest chain and return every head it signed per run. A later digest that
    signs a run at an earlier seq, or the same seq with another head, contradicts the earlier
    one: that is a break (a rewrite re-signed), and the earlier head stays the one the chain is
    checked against."""
    heads: SignedHeads = {}
    sealed: list[tuple[int, dict[str, Any]]] = []
    digests = TenantDigest.objects.filter(tenant=tenant).order_by("number").iterator()
    for digest in _signed_chain(digests, tenant, "digest", "digest_hash", report):
        report.digests += 1
        sealed.append((digest.number, digest.governance))
        for run_id, (last_seq, head) in digest.run_heads.items():
            signed = heads.setdefault(run_id, [])
            if not signed or last_seq > signed[-1][0]:
                signed.append((last_seq, head, digest.number))
                continue
            earlier_seq, earlier_head, earlier = signed[-1]
            if (last_seq, head) == (earlier_seq, earlier_head):
                continue
            report.breaks.append(Break(run_id, last_seq, "digest", (
                f"digest #{digest.number} re-signed seq {last_seq} with another head than "
                f"digest #{earlier} signed" if last_seq == earlier_seq else
                f"digest #{digest.number} re-signed the run at seq {last_seq}, before seq "
                f"{earlier_seq} that digest #{earlier} signed")
                + " (a rewrite laundered through the sealer)"))
    for label, problem in governance_seal.check(tenant, sealed) if governance else ():
        kind, _, detail = problem.partition(": ")
        report.breaks.append(Break(f"governance:{label}", None, kind, detail))
    return heads


def _account_for_absent_runs(tenant: Tenant, signed: SignedHeads,
                             report: VerifyReport, run_id: str | None = None) -> None:
    """A run a digest signed must still be there, or be listed by a signed removal record
    with the head the digest saw (or a later one)."""
    absent = set(signed) if run_id is None else {run_id} & set(signed)
    present = Run.objects.filter(tenant=tenant, run_id__in=absent) if run_id else \
        Run.objects.filter(tenant=tenant)
    absent -= set(present.values_list("run_id", flat=True))
    if not absent:
        return
    removed: dict[str, tuple[int, str, int]] = {}
    records = RemovalRecord.objects.filter(tenant=tenant).order_by("number").iterator()
    for record in _signed_chain(records, tenant, "removal record", "record_hash", report):
        for gone, (last_seq, head, _count) in record.removed_runs.items():
            removed[gone] = (last_seq, head, record.number)
    for gone in sorted(absent):
        signed_seq, signed_head, number = signed[gone][-1]
        if gone not in removed:
            report.breaks.append(Break(gone, None, "missing", f"digest #{number} signed this "
                                       "run; it is gone and no removal record accounts for it"))
            continue
        last_seq, head, removal = removed[gone]
        if last_seq < signed_seq or (last_seq == signed_seq and head != signed_head):
            report.breaks.append(Break(gone, None, "digest", f"removal record #{removal} "
                                       f"disagrees with the head digest #{number} signed"))
        else:
            report.removed_runs += 1


# -- chains -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scope:
    """What one verification pass covers: a tenant, optionally one run or a range of run
    primary keys (the share of one parallel worker)."""

    tenant_id: int
    run_id: str | None = None
    pk_range: tuple[int, int] | None = None


def _scoped_runs(tenant: Tenant, scope: Scope) -> QuerySet[Run]:
    runs = Run.objects.filter(tenant=tenant)
    if scope.run_id is not None:
        runs = runs.filter(run_id=scope.run_id)
    if scope.pk_range is not None:
        runs = runs.filter(pk__range=scope.pk_range)
    return runs


def _run_conditions(scope: Scope, prefix: str) -> tuple[str, list[Any]]:
    """SQL conditions on runs_run (columns under ``prefix``) for ``scope``; values are bound."""
    clauses = [f"{prefix}tenant_id = %s"]
    params: list[Any] = [scope.tenant_id]
    if scope.run_id is not None:
        clauses.append(f"{prefix}run_id = %s")
        params.append(scope.run_id)
    if scope.pk_range is not None:
        clauses.append(f"{prefix}id BETWEEN %s AND %s")
        params += list(scope.pk_range)
    return " AND ".join(clauses), params


def _content_rows(model: type[Any], qs: QuerySet[Any], *fields: str, **expressions: Any
                  ) -> Iterator[dict[str, Any]]:
    """``values()`` rows with a model's content fields, its refs under their own names."""
    refs = {f"_{name}": F(path) for name, path in model.content_refs.items()}
    own = [n for n in model.content_fields if n not in model.content_refs]
    for row in qs.values(*fields, *own, **expressions, **refs).iterator(chunk_size=2000):
        for name in model.content_refs:
            row[name] = row.pop(f"_{name}")
        yield row


def _record_stream(tenant: Tenant, scope: Scope
                   ) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """Every record in scope as (run pk, seq, kind, row), merged in chain order."""
    if connection.vendor == "postgresql":
        conditions, params = _run_conditions(scope, "")
        where = f"t.run_id IN (SELECT id FROM runs_run WHERE {conditions})"  # noqa: S608
        extras = {"run_pk": "t.run_id", "seq": "t.seq", "content_hash": "t.content_hash",
                  "chain_hash": "t.chain_hash"}
        streams = [integrity_fetch.stream(model, extras, where, params, "t.run_id, t.seq")
                   for model in RECORD_MODELS]
    else:
        runs = _scoped_runs(tenant, scope)
        streams = [_content_rows(model, model.objects.filter(run__in=runs).order_by(
            "run_id", "seq"), "seq", "content_hash", "chain_hash", run_pk=F("run_id"))
            for model in RECORD_MODELS]
    tagged = [_tagged(model.kind, stream)
              for model, stream in zip(RECORD_MODELS, streams, strict=True)]
    return heapq.merge(*tagged, key=lambda item: (item[0], item[1]))


def _tagged(kind: str, rows: Iterator[dict[str, Any]]
            ) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    for row in rows:
        yield row["run_pk"], row["seq"], kind, row


def _run_rows(tenant: Tenant, scope: Scope) -> Iterator[dict[str, Any]]:
    fields = ("id", "content_hash", "chain_hash", "last_seq", "head_hash", "status", "ended_at")
    if connection.vendor == "postgresql":
        where, params = _run_conditions(scope, "t.")
        return integrity_fetch.stream(Run, {f: f"t.{f}" for f in fields}, where, params,
                                      "t.id")
    return _content_rows(Run, _scoped_runs(tenant, scope).order_by("id"), *fields)


_FIELDS = {m.kind: m.content_fields for m in (Run, *RECORD_MODELS)}
_OPTIONAL = {m.kind: m.optional_content_fields for m in (Run, *RECORD_MODELS)}


def _hash_of(kind: str, row: dict[str, Any]) -> str:
    """The content hash of a row, or a mark that matches no stored hash where its content
    cannot be canonical (an integer past 64 bits, ``integrity_fast.UNREADABLE``)."""
    try:
        return content_hash(content_of(kind, _FIELDS[kind], row, _OPTIONAL[kind]))
    except TypeError:  # orjson.JSONEncodeError is one
        return integrity_fast.UNVERIFIABLE


def _check_run(run: dict[str, Any], records: list[tuple[str, dict[str, Any]]],
               signed: list[tuple[int, str, int]]) -> Break | None:
    run_id = run["run_id"]
    own = _hash_of("run", run)
    if own != run["content_hash"]:
        return Break(run_id, 0, "modified", "the run record's content was changed")
    link = chain_hash(GENESIS, 0, run["content_hash"])
    if link != run["chain_hash"]:
        return Break(run_id, 0, "modified", "the run record's chain hash was changed")
    by_seq: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    for kind, row in records:
        by_seq.setdefault(row["seq"], []).append((kind, row))
    hashes = {kind + str(row["seq"]): _hash_of(kind, row) for kind, row in records}
    if 0 in by_seq:
        kinds = ", ".join(kind for kind, _ in by_seq[0])
        return Break(run_id, 0, "inserted", f"a record ({kinds}) claims seq 0, the run "
                     "record's own position")
    last_seq = max([run["last_seq"], *by_seq]) if by_seq else run["last_seq"]
    for seq in range(1, last_seq + 1):
        here = by_seq.get(seq, [])
        if not here:
            if seq > max(by_seq, default=0):
                return Break(run_id, seq, "missing",
                             f"the chain ends at seq {seq - 1} but its head is seq "
                             f"{run['last_seq']} (records dropped from the tail)")
            return Break(run_id, seq, "missing", "no record has this sequence number")
        if len(here) > 1:
            kinds = ", ".join(kind for kind, _ in here)
            return Break(run_id, seq, "inserted", f"{len(here)} records claim this position "
                         f"({kinds})")
        kind, row = here[0]
        actual = hashes[kind + str(seq)]
        expected = chain_hash(link, seq, actual)
        if expected != row["chain_hash"]:
            if actual != row["content_hash"]:
                return Break(run_id, seq, "modified", f"the {kind}'s content was changed")
            moved = _belongs_here(link, seq, records, hashes)
            if moved is not None:
                return Break(run_id, seq, "reordered",
                             f"the {moved[0]} stored at seq {moved[1]} belongs here")
            return Break(run_id, seq, "modified", f"the {kind}'s chain link was changed")
        if actual != row["content_hash"]:
            return Break(run_id, seq, "modified", f"the {kind}'s content hash was changed")
        link = expected
    if last_seq > run["last_seq"]:
        return Break(run_id, run["last_seq"] + 1, "inserted",
                     f"records past the run's head (seq {run['last_seq']})")
    if link != run["head_hash"]:
        return Break(run_id, run["last_seq"], "modified", "the run's head hash does not match "
                     "its last record")
    ended = _end_differs(run, records)
    if ended is not None:
        return Break(run_id, None, "modified", ended)
    for signed_seq, signed_head, number in signed:
        if signed_seq > run["last_seq"]:
            return Break(run_id, run["last_seq"] + 1, "missing",
                         f"digest #{number} signed seq {signed_seq}; the chain now ends at "
                         f"{run['last_seq']} (records dropped from the tail)")
        at_signed = chain_of(run, records, hashes, signed_seq)
        if at_signed != signed_head:
            return Break(run_id, signed_seq, "digest",
                         f"the chain up to seq {signed_seq} differs from what digest #{number} "
                         "signed (rewritten)")
    return None


def _end_differs(run: dict[str, Any], records: list[tuple[str, dict[str, Any]]]) -> str | None:
    """How the run's status and end time (tip columns, which may move) contradict the closing
    record its chain holds, if they do."""
    closing = [row for kind, row in records
               if kind == "annotation" and row["annotation_kind"] == AnnotationKind.RUN_STATUS]
    status, ended_at = run["status"], run["ended_at"]
    if not closing:
        if status == RunStatus.RUNNING and ended_at is None:
            return None
        return (f"the run says status {status}, ended {ended_at}, but its chain holds no "
                "closing record")
    recorded = closing[-1]["data"] or {}
    recorded_end = recorded.get("ended_at")
    if (status != recorded.get("status")
            or ended_at != (recorded_end and datetime.fromisoformat(recorded_end))):
        return (f"the run says status {status}, ended {ended_at}; its closing record (seq "
                f"{closing[-1]['seq']}) says {recorded.get('status')}, ended {recorded_end}")
    return None


def _belongs_here(link: str, seq: int, records: list[tuple[str, dict[str, Any]]],
                  hashes: dict[str, str]) -> tuple[str, int] | None:
    for kind, row in records:
        if row["seq"] != seq and chain_hash(link, seq, hashes[kind + str(row["seq"])]) == \
                row["chain_hash"]:
            return kind, row["seq"]
    return None


def chain_of(run: dict[str, Any], records: list[tuple[str, dict[str, Any]]],
             hashes: dict[str, str], upto: int) -> str:
    link = chain_hash(GENESIS, 0, run["content_hash"])
    for kind, row in sorted(records, key=lambda kr: kr[1]["seq"]):
        if row["seq"] > upto:
            break
        link = chain_hash(link, row["seq"], hashes[kind + str(row["seq"])])
    return link


def verify_tenant(tenant: Tenant, run_id: str | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  workers: int | None = 1) -> VerifyReport:
    """Recompute every chain of ``tenant`` (or one run) and check them against the digests,
    all from one snapshot of the database. On PostgreSQL, ``workers > 1`` shares the runs
    among processes that import the same snapshot; ``workers=None`` chooses the number by
    the tenant's size (``integrity_parallel.choose_workers``: a process costs seconds to
    start, more than a small tenant's whole pass)."""
    fresh = not connection.in_atomic_block  # a caller's transaction keeps its own snapshot
    # Workers read committed data only: inside a caller's transaction, stay serial.
    parallel = fresh and run_id is None and connection.vendor == "postgresql"
    if workers is None:
        from .integrity_parallel import workers_for

        workers = workers_for(tenant) if parallel else 1
    with transaction.atomic():
        if fresh and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        if workers > 1 and parallel:
            from .integrity_parallel import verify_in_parallel

            report, signed = verify_in_parallel(tenant, workers, progress)
            report.workers = workers
        else:
            report = VerifyReport()
            signed = _verify_digests(tenant, report if run_id is None else VerifyReport())
            total = Run.objects.filter(tenant=tenant).count() if progress else 0
            verify_scope(tenant, Scope(tenant.pk, run_id), signed, report,
                         lambda done: progress(done, total) if progress else None)
        _account_for_absent_runs(tenant, signed, report, run_id)
        return report


def verify_scope(tenant: Tenant, scope: Scope, signed: SignedHeads,
                 report: VerifyReport | None = None,
                 progress: Callable[[int], None] | None = None) -> VerifyReport:
    """Check the chains of the runs in ``scope`` (in the caller's transaction). On
    PostgreSQL, ``integrity_fast`` proves runs intact and this walk names the breaks it finds."""
    report = report or VerifyReport()
    if connection.vendor == "postgresql":
        return integrity_fast.verify_scope(tenant, scope, signed, report, progress)
    stream = _record_stream(tenant, scope)
    pending = next(stream, None)
    for run in _run_rows(tenant, scope):
        records: list[tuple[str, dict[str, Any]]] = []
        while pending is not None and pending[0] == run["id"]:
            records.append((pending[2], pending[3]))
            pending = next(stream, None)
        report.runs += 1
        report.records += len(records) + 1
        problem = _check_run(run, records, signed.get(run["run_id"], []))
        if problem is not None:
            report.breaks.append(problem)
        if progress and report.runs % 500 == 0:
            progress(report.runs)
    if progress:
        progress(report.runs)
    return report
