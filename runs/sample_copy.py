"""Generate ledger data straight into PostgreSQL with ``COPY``: the generator's path to ten
million tool calls (``python -m bench.generate --copy``).

The runs are ``runs.sample_runs``' (same seed, same content), chained exactly as ingestion
chains them (same seq order, same canonical content, the closing status note), so ``ledger
verify`` passes on what this loads. What it skips is ingestion's work for an untrusted agent:
validating a batch, looking for records already stored, building model instances. It therefore
only appends runs the tenant does not have yet (it refuses a tenant that already has runs of
the prefix), and it is a benchmark tool, not an import path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction

from core.canonical import GENESIS, canonical_timestamp, chain_hash, content_hash
from runs.models.base import content_of

from .sample_runs import AGENTS, TOOLS, RunGenerator

#: rows kept in memory before they are copied (one transaction each)
CHUNK_RUNS = 2000
TABLES = ("runs_run", "runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation")


def _dt(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


class _Ids:
    """Primary keys reserved from a table's sequence a block at a time.

    ``nextval`` over a series: each value is the sequence's own, so processes loading side by
    side never collide, and nothing is locked. (A block made by ``setval`` needs a lock held
    until the chunk commits; two processes each holding one table's and wanting the other's
    deadlocked at 6M tool calls.)"""

    BLOCK = 10_000

    def __init__(self, table: str):
        self.table = table
        self.free: list[int] = []

    def take(self) -> int:
        if not self.free:
            with connection.cursor() as cursor:
                cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) "
                               "FROM generate_series(1, %s)", [self.table, self.BLOCK])
                self.free = sorted((row[0] for row in cursor.fetchall()), reverse=True)
        return self.free.pop()


class _Chunk:
    def __init__(self) -> None:
        self.rows: dict[str, list[list[Any]]] = {t: [] for t in TABLES}


class CopyLoader:
    """Loads one tenant's generated runs."""

    RUN = ("id", "tenant_id", "seq", "content_hash", "chain_hash", "recorded_at", "run_id",
           "agent_id", "goal", "trigger_ref", "started_at", "replay_of_id", "metadata",
           "status", "ended_at", "last_seq", "head_hash", "tip_moved_at")
    STEP = ("id", "tenant_id", "seq", "content_hash", "chain_hash", "recorded_at", "run_id",
            "step_id", "index", "title", "status", "started_at", "ended_at", "metadata")
    MODEL_CALL = ("id", "tenant_id", "seq", "content_hash", "chain_hash", "recorded_at",
                  "run_id", "call_id", "step_id", "provider", "model", "messages", "response",
                  "request", "input_tokens", "output_tokens", "latency_ms", "started_at",
                  "ended_at", "error", "classifications")
    TOOL_CALL = ("id", "tenant_id", "seq", "content_hash", "chain_hash", "recorded_at",
                 "run_id", "call_id", "tool_call_ref", "step_id", "tool_id", "action_class",
                 "input", "output", "status", "error", "attempt", "retry_of_id", "started_at",
                 "ended_at", "duration_ms", "idempotency_key", "supports_rollback",
                 "classifications")
    ANNOTATION = ("id", "tenant_id", "seq", "content_hash", "chain_hash", "recorded_at",
                  "run_id", "annotation_id", "annotation_kind", "target_call_id", "body", "data",
                  "author_id", "author_label")
    COLUMNS = dict(zip(TABLES, (RUN, STEP, MODEL_CALL, TOOL_CALL, ANNOTATION), strict=True))

    def __init__(self, tenant: Any, seed: int, recorded_by: str = "generator"):
        from runs.models import Agent, Tool

        self.tenant = tenant
        self.gen = RunGenerator(tenant.slug, seed=seed)
        self.recorded_by = recorded_by
        self.agents = {aid: Agent.objects.get_or_create(
            tenant=tenant, agent_id=aid, defaults={"name": aid.replace("-", " ").title()})[0].pk
            for aid in AGENTS}
        self.tools = {name: Tool.objects.get_or_create(
            tenant=tenant, name=name, defaults={"action_class": action,
                                                "supports_rollback": rollback})[0].pk
            for name, (action, rollback, _) in TOOLS.items()}
        self.ids = {t: _Ids(t) for t in TABLES}
        self.counts = {t: 0 for t in TABLES}

    # -- one run, as ingestion plans and chains it --------------------------------------

    def add_run(self, run: dict[str, Any], chunk: _Chunk, now: datetime) -> int:
        import uuid

        tenant_id = self.tenant.pk
        run_pk = self.ids["runs_run"].take()
        started = _dt(run["started_at"])
        run_content = content_of("run", ("run_id", "agent_id", "goal", "trigger_ref",
                                         "started_at", "replay_of", "metadata"),
                                 {**run, "started_at": started, "replay_of": None})
        run_hash = content_hash(run_content)
        head = chain_hash(GENESIS, 0, run_hash)
        run_chain = head
        records: list[tuple[Any, int, str, dict[str, Any]]] = []

        when: Any = started
        step_pks: dict[str, int] = {}
        for step in run["steps"]:
            step_pks[step["step_id"]] = self.ids["runs_step"].take()
            values = {**step, "run_id": run["run_id"], "started_at": _dt(step["started_at"]),
                      "ended_at": _dt(step["ended_at"]), "metadata": step.get("metadata", {})}
            when = values["started_at"] or when
            records.append((when, 0, "runs_step", values))
        when = started
        for mc in run["model_calls"]:
            values = {**mc, "run_id": run["run_id"], "started_at": _dt(mc["started_at"]),
                      "ended_at": _dt(mc["ended_at"]), "input_tokens": mc["usage"][
                          "input_tokens"], "output_tokens": mc["usage"]["output_tokens"],
                      "error": None, "classifications": {}, "request": None}
            when = values["started_at"] or when
            records.append((when, 1, "runs_modelcall", values))
        when = started
        call_pks: dict[str, int] = {}
        for tc in run["tool_calls"]:
            call_pks[tc["call_id"]] = self.ids["runs_toolcall"].take()
            values = {**tc, "run_id": run["run_id"], "started_at": _dt(tc["started_at"]),
                      "ended_at": _dt(tc["ended_at"]), "tool_call_ref": ""}
            when = values["started_at"] or when
            records.append((when, 2, "runs_toolcall", values))
        records.sort(key=lambda item: (item[0], item[1]))
        ended = _dt(run["ended_at"])
        if run["status"] != "running":
            records.append((when, 3, "runs_annotation", {
                "run_id": run["run_id"], "annotation_id": uuid.uuid4().hex,
                "annotation_kind": "run_status", "target_call_id": "",
                "body": f"run {run['status']}",
                "data": {"status": run["status"],
                         "ended_at": ended.isoformat() if ended else None},
                "author_label": self.recorded_by}))

        dumps = orjson.dumps
        for seq, (_, _, table, v) in enumerate(records, start=1):
            kind, fields, optional = _KINDS[table]
            record_hash = content_hash(content_of(kind, fields, v, optional))
            head = chain_hash(head, seq, record_hash)
            common = [tenant_id, seq, record_hash, head, now, run_pk]
            rows = chunk.rows[table]
            if table == "runs_step":
                rows.append([step_pks[v["step_id"]], *common, v["step_id"], v["index"],
                             v["title"], v["status"], v["started_at"], v["ended_at"],
                             dumps(v["metadata"]).decode()])
            elif table == "runs_modelcall":
                rows.append([self.ids[table].take(), *common, v["call_id"],
                             step_pks.get(v["step_id"]), v["provider"], v["model"],
                             dumps(v["messages"]).decode(), dumps(v["response"]).decode(),
                             None, v["input_tokens"], v["output_tokens"], v["latency_ms"],
                             v["started_at"], v["ended_at"], None, "{}"])
            elif table == "runs_toolcall":
                s, e = v["started_at"], v["ended_at"]
                rows.append([call_pks[v["call_id"]], *common, v["call_id"], "",
                             step_pks.get(v["step_id"]), self.tools[v["tool"]],
                             v["action_class"], dumps(v["input"]).decode(),
                             None if v["output"] is None else dumps(v["output"]).decode(),
                             v["status"],
                             None if v["error"] is None else dumps(v["error"]).decode(),
                             v["attempt"],
                             call_pks[v["retry_of"]] if v["retry_of"] else None, s, e,
                             int((e - s).total_seconds() * 1000) if s and e else None,
                             v["idempotency_key"], v["supports_rollback"],
                             dumps(v["classifications"]).decode()])
            else:
                rows.append([self.ids[table].take(), *common, v["annotation_id"],
                             v["annotation_kind"], "", v["body"], dumps(v["data"]).decode(),
                             None, v["author_label"]])
        chunk.rows["runs_run"].append([
            run_pk, tenant_id, 0, run_hash, run_chain, now, run["run_id"],
            self.agents[run["agent_id"]], run["goal"], run["trigger_ref"], started, None,
            dumps(run["metadata"]).decode(), run["status"], ended, len(records), head, now])
        return len(run["tool_calls"])

    def write(self, chunk: _Chunk) -> None:
        with connection.cursor() as cursor:
            for table in TABLES:
                rows = chunk.rows[table]
                if not rows:
                    continue
                columns = ", ".join(f'"{c}"' for c in self.COLUMNS[table])
                with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                self.counts[table] += len(rows)


def _kinds() -> dict[str, tuple[str, tuple[str, ...], frozenset[str]]]:
    from runs.models import Annotation, ModelCall, Step, ToolCall

    return {m._meta.db_table: (m.kind, m.content_fields, m.optional_content_fields)
            for m in (Step, ModelCall, ToolCall, Annotation)}


_KINDS: dict[str, tuple[str, tuple[str, ...], frozenset[str]]] = {}


def copy_load(tenant_slugs: list[str], tool_calls: int, seed: int = 7, progress: bool = True,
              recorded_over_days: int = 0) -> dict[str, int]:
    """Generate ``tool_calls`` tool calls (split over the tenants) and COPY them in; returns
    the rows written per table.

    ``recorded_over_days``: the records' ``recorded_at`` (the time the portal stored them, the
    partition key on PostgreSQL) rises from that many days ago to now as each tenant's share is
    written, so the ledger is laid out as one recorded over that time (its months each in their
    partition); 0: all of it now."""
    from django.utils import timezone

    from core.models import Tenant
    from runs.models import Run

    if connection.vendor != "postgresql":
        raise SystemExit("the COPY generator needs PostgreSQL (use load() elsewhere)")
    _KINDS.update(_kinds())
    per_tenant = tool_calls // len(tenant_slugs)
    _make_past_months(recorded_over_days)
    started = time.perf_counter()
    totals: dict[str, int] = {t: 0 for t in TABLES}
    made_all = 0
    for slug in tenant_slugs:
        tenant, _ = Tenant.objects.get_or_create(slug=slug, defaults={"name": slug.title()})
        if Run.objects.filter(tenant=tenant, run_id__startswith=f"{slug}-run-").exists():
            raise SystemExit(f"{slug} already has generated runs: load into a fresh tenant")
        loader = CopyLoader(tenant, seed)
        made = 0
        span = timedelta(days=recorded_over_days)
        for runs in _chunks(loader.gen, per_tenant):
            chunk = _Chunk()
            now = timezone.now()
            with transaction.atomic():
                for run in runs:
                    made += loader.add_run(run, chunk, now - span * (1 - made / per_tenant))
                loader.write(chunk)
            if progress:
                seconds = max(time.perf_counter() - started, 1e-9)
                rows = sum(totals.values()) + sum(loader.counts.values())
                print(f"\r{slug}: {made_all + made:,} tool calls, {rows:,} rows "
                      f"({(made_all + made) / seconds:,.0f} tool calls/s, "
                      f"{rows / seconds:,.0f} rows/s)", end="", file=sys.stderr)
        made_all += made
        for table, n in loader.counts.items():
            totals[table] += n
    if progress:
        print(file=sys.stderr)
    return totals


def copy_load_parallel(tenant_slugs: list[str], tool_calls: int, seed: int = 7,
                       jobs: int = 1, progress: bool = True, recorded_over_days: int = 0
                       ) -> dict[str, int]:
    """``copy_load`` with the tenants shared among ``jobs`` processes (each its own
    connection; ids come from the sequences a block at a time, so they never collide)."""
    if jobs <= 1 or len(tenant_slugs) <= 1:
        return copy_load(tenant_slugs, tool_calls, seed, progress, recorded_over_days)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from django.db import connections

    per_tenant = tool_calls // len(tenant_slugs)
    groups = [tenant_slugs[i::jobs] for i in range(min(jobs, len(tenant_slugs)))]
    _make_past_months(recorded_over_days)  # once, before the processes (they would race)

    connections.close_all()  # each process opens its own
    totals: dict[str, int] = {t: 0 for t in TABLES}
    with ProcessPoolExecutor(len(groups), mp_context=get_context("fork")) as pool:
        for rows in pool.map(copy_load, groups, [per_tenant * len(g) for g in groups],
                             [seed] * len(groups), [progress] * len(groups),
                             [recorded_over_days] * len(groups)):
            for table, n in rows.items():
                totals[table] += n
    return totals


def _make_past_months(recorded_over_days: int) -> None:
    """The months past the records will be stored in, as the beat task would have made them
    ahead (they are made if missing)."""
    if recorded_over_days:
        from django.utils import timezone

        from core.partitions import make_past_months

        make_past_months((timezone.now() - timedelta(days=recorded_over_days)).date())


def _chunks(gen: RunGenerator, tool_calls: int) -> Iterator[list[dict[str, Any]]]:
    made = 0
    while made < tool_calls:
        runs: list[dict[str, Any]] = []
        while made < tool_calls and len(runs) < CHUNK_RUNS:
            run = gen.run()
            made += len(run["tool_calls"])
            runs.append(run)
        yield runs


__all__ = ["CopyLoader", "canonical_timestamp", "copy_load", "copy_load_parallel"]
