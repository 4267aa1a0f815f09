"""What sealing and verifying the governance records costs: ``--decisions`` policy decisions
(with an approval request and a vote every ``--held-every``) sealed by one tenant digest, then
checked as ``ledger verify`` checks them (in its repeatable-read transaction), with where that
time goes (fetch, hash, chain, state checks, each timed alone); records/s beside the bare
hashlib loop over the same canonical bytes, same run, and the load average before and after.
Target: the same as ``ledger verify``'s (bench.verify), >= 100,000 records/s.

    .venv/bin/python -m bench.governance_seal                       # 200,000 decisions
    .venv/bin/python -m bench.governance_seal --decisions 1000000 --keep
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from datetime import timedelta
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    record_figure,
    table,
    verdict,
)

TARGET = 100_000


def load(decisions: int, held_every: int) -> Any:
    from django.contrib.auth.models import User

    from approvals.models import ApprovalRequest, Vote
    from core.models import Tenant
    from policies.models import Decision

    tenant, _ = Tenant.objects.get_or_create(slug="bench-gov", defaults={"name": "bench"})
    if Decision.objects.filter(tenant=tenant).count() >= decisions:
        return tenant
    approver, _ = User.objects.get_or_create(username="bench-approver")
    due = time_now() + timedelta(days=1)
    batch: list[Decision] = []
    for i in range(decisions):
        batch.append(Decision(
            tenant=tenant, run_id=f"run-{i // 5}", call_id=f"call-{i}", agent_id="agent-1",
            tool="refund_payment" if i % held_every == 0 else "lookup", action_class="write",
            mode="live", input={"args": {"amount_cents": i, "customer": f"c-{i % 997}"}},
            effect="require_approval" if i % held_every == 0 else "allow", reason="rule",
            matched_rules=[{"name": "r"}], engine="embedded", engine_answers={},
            latency_us=120, decided_by="agent-1"))
        if len(batch) == 5000:
            Decision.objects.bulk_create(batch)
            batch.clear()
    Decision.objects.bulk_create(batch)
    requests = ApprovalRequest.objects.bulk_create([ApprovalRequest(
        tenant=tenant, run_id=f"run-{i}", call_id=f"call-{i}", tool="refund_payment",
        action_class="write", arguments={"amount_cents": i}, action_hash="0" * 64,
        requested_by="agent-1", due_at=due) for i in range(0, decisions, held_every)],
        batch_size=5000)
    Vote.objects.bulk_create([Vote(request=r, approver=approver, approve=True,
                                   justification="ok") for r in requests], batch_size=5000)
    return tenant


def time_now() -> Any:
    from django.utils import timezone

    return timezone.now()


def bare_hashlib(tenant: Any) -> tuple[int, float]:
    """The floor: fetch the same rows, build the same canonical bytes, hash them."""
    from core.canonical import canonical_json
    from runs.governance_seal import KINDS

    rows = [(kind, row) for kind in KINDS
            for row in kind.rows(tenant.pk).order_by("pk").values(*kind.fields).iterator(
                chunk_size=2000)]
    payloads = [canonical_json({"kind": kind.label, **{k: (v.isoformat() if hasattr(
        v, "isoformat") else v) for k, v in row.items()}}) for kind, row in rows]
    started = time.perf_counter()
    for payload in payloads:
        hashlib.sha256(payload).hexdigest()
    return len(payloads), time.perf_counter() - started


def in_verify_transaction(work: Any) -> Any:
    """``work()`` in the transaction ``ledger verify`` checks in (repeatable read, read only)."""
    from django.db import connection, transaction

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        return work()


def breakdown(tenant: Any, governance: dict[str, Any]) -> list[tuple[str, float, float]]:
    """Where check's time goes: each of its parts alone over the same records, as (part, wall
    s, this process's CPU s). Fetching waits on PostgreSQL (its CPU is not this process's);
    check fetches the next rows while it hashes these, so its time is less than the parts'
    sum when a core is free for each."""
    from core.canonical import GENESIS
    from runs.governance_seal import (
        KINDS,
        built_rows,
        content_columns,
        state_contradictions,
    )

    parts: list[tuple[str, float, float]] = []

    def timed(part: str, work: Any) -> Any:
        started, cpu = time.perf_counter(), time.process_time()
        result = work()
        parts.append((part, time.perf_counter() - started, time.process_time() - cpu))
        return result

    def fetch() -> list[list[tuple[Any, ...]]]:
        return [list(built_rows(kind, kind.rows(tenant.pk).filter(
            pk__lte=governance[kind.label]["upto"]).order_by("pk"))) for kind in KINDS]

    built = timed("fetch (PostgreSQL, psycopg)", lambda: in_verify_transaction(fetch))
    readers = [content_columns(kind)[1] for kind in KINDS]
    hashed = timed("hash (orjson + sha256 per record)", lambda: [
        [(row[0], reader.hashed(row)[0]) for row in rows]
        for reader, rows in zip(readers, built, strict=True)])

    def chain() -> None:
        sha256 = hashlib.sha256
        for rows in hashed:
            head = GENESIS
            for pk, digest in rows:
                head = sha256(f"{head}:{pk}:{digest}".encode()).hexdigest()

    timed("chain (sha256 per link)", chain)
    timed("state checks (approval requests)",
          lambda: in_verify_transaction(lambda: state_contradictions(tenant)))
    return parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--held-every", type=int, default=10)
    add_db_arguments(parser, "governance")
    args = parser.parse_args()
    with bench_database(args, reuse=args.keep) as db:
        print(environment_line(db))
        print(f"load average before: {os.getloadavg()}")
        started = time.perf_counter()
        tenant = load(args.decisions, args.held_every)
        print(f"loaded in {time.perf_counter() - started:.1f} s")

        from runs.governance_seal import check
        from runs.integrity import seal_tenant_digest

        started = time.perf_counter()
        digest = seal_tenant_digest(tenant, time_now() + timedelta(minutes=1))
        sealed_s = time.perf_counter() - started
        assert digest is not None
        records = sum(k["count"] for k in digest.governance.values())
        started, cpu = time.perf_counter(), time.process_time()
        problems = in_verify_transaction(
            lambda: check(tenant, [(digest.number, digest.governance)]))
        check_s, check_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert not problems, problems
        parts = breakdown(tenant, digest.governance)
        hashed, bare_s = bare_hashlib(tenant)
        print(table(["pass", "records", "s", "records/s"], [
            ["seal (first digest)", records, f"{sealed_s:.2f}", int(records / sealed_s)],
            ["verify's check", records, f"{check_s:.2f}", int(records / check_s)],
            ["bare sha256 of the canonical bytes", hashed, f"{bare_s:.2f}",
             int(hashed / bare_s)],
        ]))
        print(f"\nverify's check, part by part (each alone; check's own: {check_s:.2f} s "
              f"wall, {check_cpu:.2f} s CPU of this process):")
        print(table(["part", "s", "CPU s (this process)", "us/record"], [
            [part, f"{wall:.2f}", f"{cpu:.2f}", f"{wall / records * 1e6:.1f}"]
            for part, wall, cpu in parts]))
        print(f"load average after: {os.getloadavg()}")
        rate = records / check_s
        print(f"verify's check {int(rate):,} records/s, target >= {TARGET:,}: "
              f"{verdict(rate >= TARGET)}")
        record_figure("governance_seal", f"verify's check over {records:,} records",
                      f"{int(rate):,} records/s", f">= {TARGET:,}/s",
                      f"bare sha256 {int(hashed / bare_s):,}/s",
                      f"{rate / (hashed / bare_s):.2f}x", rate >= TARGET)


if __name__ == "__main__":
    main()
