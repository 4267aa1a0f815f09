"""Ingestion: one batch, one transaction, all of it lands or none of it.

Re-sending a record that already landed is a no-op; a different record under the same external
id is a conflict naming it. New records are appended to their run's hash chain in time order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from django.db import IntegrityError, connection, transaction
from django.db.models import IntegerField, Model, Value
from simple_history.utils import bulk_create_with_history

from core.canonical import GENESIS
from core.governance_record import PORTAL_AGENT_ID
from core.metrics import count_ingested
from core.models import Tenant
from core.partition_keys import keys_table

from .annotations import GOVERNANCE_RUN_ID
from .bulk import build, insert_all
from .deferred_batch import DeferredIn
from .ingest_schema import BatchIn, ModelCallIn, RunIn, ToolCallIn
from .models import (
    Agent,
    Annotation,
    AnnotationKind,
    LedgerRecord,
    ModelCall,
    Run,
    RunStatus,
    Step,
    Tool,
    ToolCall,
)

KINDS = ("runs", "steps", "model_calls", "tool_calls", "annotations")


class BatchRejected(Exception):
    """The batch was refused as a whole; ``problems`` name each bad record by its path."""

    status_code = 400

    def __init__(self, problems: list[dict[str, str]]):
        super().__init__("; ".join(f"{p['path']}: {p['message']}" for p in problems[:5]))
        self.problems = problems


class BatchInvalid(BatchRejected):
    status_code = 400


class BatchConflict(BatchRejected):
    status_code = 409


class BatchForbidden(BatchRejected):
    status_code = 403


@dataclass
class IngestResult:
    created: Counter[str] = field(default_factory=Counter)
    unchanged: Counter[str] = field(default_factory=Counter)
    #: what lenient ingestion kept for reconciliation: [{path, reason}]
    deferred: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"created": {k: self.created[k] for k in KINDS},
                                  "unchanged": {k: self.unchanged[k] for k in KINDS}}
        if self.deferred:
            answer["deferred"] = self.deferred
        return answer


def ingest_batch(tenant: Tenant, batch: BatchIn, recorded_by: str = "",
                 for_agents: Collection[str] | None = None,
                 deferred: Sequence[DeferredIn] = (), reconciling: bool = False
                 ) -> IngestResult:
    """Append ``batch`` to ``tenant``'s ledger atomically. ``for_agents``: the agents whoever
    sends it may record for (an API key's binding; None: any). ``deferred``: what lenient
    ingestion kept back from it, stored in the same transaction. ``reconciling``: records
    placed by reconciliation may join a closed run (they were received before it closed)."""
    if recorded_by != PORTAL_AGENT_ID:
        _refuse_the_portals_own(batch)
    if for_agents is not None:
        _refuse_other_agents(batch, for_agents)
    _refuse_duplicates_within(batch)
    for attempt in (1, 2):
        try:
            with transaction.atomic():
                result = _BatchWriter(tenant, batch, recorded_by, reconciling).write()
                if deferred:
                    from .deferred import keep_deferred

                    keep_deferred(tenant, deferred, received_by=recorded_by)
                    result.deferred = [{"path": d.payload.get("path", ""), "reason": d.reason}
                                       for d in deferred]
            count_ingested(result.created)
            return result
        except IntegrityError:
            # A concurrent batch created one of our new rows first; the second try sees it
            # and takes the idempotent / conflict path.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


M = TypeVar("M", bound=Model)

# Concurrent batches may introduce the same new agent or tool; each one that loses the race
# re-reads what the winner committed. Bounded: each try sees every row committed before it.
REFERENCE_ROW_ATTEMPTS = 5


def _load_or_create(load: Callable[[], dict[str, M]], make_rows: Callable[[Iterable[str]], list[M]],
                    wanted: list[str], model: type[M], key: Callable[[M], str]) -> dict[str, M]:
    """The reference rows named by ``wanted``, creating (with history) those nobody has yet.

    The insert runs in a savepoint: a unique violation from a concurrent creator rolls back only
    the insert, not the batch, and the next try loads the winner's row instead of creating it.
    """
    for attempt in range(1, REFERENCE_ROW_ATTEMPTS + 1):
        found = load()
        missing = [name for name in wanted if name not in found]
        if not missing:
            return found
        try:
            with transaction.atomic():
                created = bulk_create_with_history(make_rows(missing), model,
                                                   default_change_reason="first seen in a batch")
        except IntegrityError:
            if attempt == REFERENCE_ROW_ATTEMPTS:
                raise
            continue
        found.update({key(row): row for row in created})
        return found
    raise AssertionError("unreachable")


def _refuse_the_portals_own(batch: BatchIn) -> None:
    """The governance log and the portal's agent are written by the portal alone: an agent
    that names them could append to, or close, the tenant's record of interventions."""
    problems = [{"path": f"runs[{i}].{field}", "message": f"{value!r} is the portal's own "
                 "(the tenant's governance log); agents cannot record into it"}
                for i, run in enumerate(batch.runs)
                for field, value in (("run_id", run.run_id), ("agent_id", run.agent_id))
                if value in (GOVERNANCE_RUN_ID, PORTAL_AGENT_ID)]
    if problems:
        raise BatchInvalid(problems)


def _refuse_other_agents(batch: BatchIn, for_agents: Collection[str]) -> None:
    problems = [{"path": f"runs[{i}].agent_id", "message": f"this API key does not act for "
                 f"the agent {run.agent_id!r}"}
                for i, run in enumerate(batch.runs) if run.agent_id not in for_agents]
    if problems:
        raise BatchForbidden(problems)


def _refuse_duplicates_within(batch: BatchIn) -> None:
    problems: list[dict[str, str]] = []

    def check(items: Iterable[tuple[str, str]], what: str) -> None:
        seen: set[str] = set()
        for path, key in items:
            if key in seen:
                problems.append({"path": path, "message": f"{what} {key!r} appears twice in "
                                 "this batch"})
            seen.add(key)

    check(((f"runs[{i}].run_id", r.run_id) for i, r in enumerate(batch.runs)), "run_id")
    check(((f"runs[{i}].tool_calls[{j}].call_id", c.call_id) for i, r in enumerate(batch.runs)
           for j, c in enumerate(r.tool_calls)), "tool call_id")
    check(((f"runs[{i}].model_calls[{j}].call_id", c.call_id) for i, r in enumerate(batch.runs)
           for j, c in enumerate(r.model_calls)), "model call_id")
    check(((f"runs[{i}].annotations[{j}].annotation_id", a.annotation_id)
           for i, r in enumerate(batch.runs) for j, a in enumerate(r.annotations)),
          "annotation_id")
    for i, run in enumerate(batch.runs):
        check(((f"runs[{i}].steps[{j}].step_id", s.step_id) for j, s in enumerate(run.steps)),
              "step_id")
    if problems:
        raise BatchInvalid(problems)


def _differences(stored: dict[str, Any], incoming: dict[str, Any]) -> str:
    fields = sorted(k for k in stored.keys() | incoming.keys() if stored.get(k) != incoming.get(k))
    return ", ".join(fields)


class _BatchWriter:
    def __init__(self, tenant: Tenant, batch: BatchIn, recorded_by: str,
                 reconciling: bool = False):
        self.tenant = tenant
        self.reconciling = reconciling
        self.batch = batch
        self.recorded_by = recorded_by
        self.result = IngestResult()
        self.invalid: list[dict[str, str]] = []
        self.conflicts: list[dict[str, str]] = []

    # -- the whole batch --------------------------------------------------------------------

    def write(self) -> IngestResult:
        runs = self.batch.runs
        agents = self._agents(runs)
        tools = self._tools(runs)
        stored_runs = {
            r.run_id: r
            for r in Run.objects.select_for_update(of=("self",))
            .select_related("agent", "replay_of")
            .filter(tenant=self.tenant, run_id__in=[r.run_id for r in runs])
        }
        existing = _ExistingRecords(self.tenant, runs, stored_runs)

        plans = [self._plan_run(i, run_in, agents, tools, stored_runs, existing)
                 for i, run_in in enumerate(runs)]
        if self.invalid:
            raise BatchInvalid(self.invalid)
        if self.conflicts:
            raise BatchConflict(self.conflicts)
        self._insert(plans)
        return self.result

    def _agents(self, runs: Sequence[RunIn]) -> dict[str, Agent]:
        wanted = {r.agent_id: r.agent_name for r in runs}

        def load() -> dict[str, Agent]:
            return {a.agent_id: a for a in Agent.objects.filter(tenant=self.tenant,
                                                                 agent_id__in=list(wanted))}

        def make_rows(missing: Iterable[str]) -> list[Agent]:
            return [Agent(tenant=self.tenant, agent_id=aid, name=wanted[aid]) for aid in missing]

        return _load_or_create(load, make_rows, list(wanted), Agent, lambda a: a.agent_id)

    def _tools(self, runs: Sequence[RunIn]) -> dict[str, Tool]:
        first_seen: dict[str, ToolCallIn] = {}
        for run in runs:
            for call in run.tool_calls:
                first_seen.setdefault(call.tool, call)

        def load() -> dict[str, Tool]:
            return {t.name: t for t in Tool.objects.filter(tenant=self.tenant,
                                                            name__in=list(first_seen))}

        def make_rows(missing: Iterable[str]) -> list[Tool]:
            return [Tool(tenant=self.tenant, name=name,
                         action_class=first_seen[name].action_class,
                         supports_rollback=first_seen[name].supports_rollback)
                    for name in missing]

        return _load_or_create(load, make_rows, list(first_seen), Tool, lambda t: t.name)

    # -- one run ----------------------------------------------------------------------------

    def _plan_run(self, i: int, run_in: RunIn, agents: dict[str, Agent], tools: dict[str, Tool],
                  stored_runs: dict[str, Run], existing: _ExistingRecords) -> _RunPlan:
        path = f"runs[{i}]"
        candidate = build(Run, tenant=self.tenant, run_id=run_in.run_id,
                          agent=agents[run_in.agent_id], goal=run_in.goal,
                          trigger_ref=run_in.trigger_ref, started_at=run_in.started_at,
                          metadata=run_in.metadata, seq=0, status=RunStatus.RUNNING, last_seq=0)
        run = stored_runs.get(run_in.run_id)
        if run is None:
            run = candidate
            plan = _RunPlan(run=run, is_new=True, head=run.seal(GENESIS), next_seq=1)
            self.result.created["runs"] += 1
        else:
            stored, incoming = run.ledger_content(), candidate.ledger_content()
            if stored != incoming:
                self._conflict(path, f"run {run.run_id!r} was recorded with different "
                               f"{_differences(stored, incoming)}")
            plan = _RunPlan(run=run, is_new=False, head=run.head_hash, next_seq=run.last_seq + 1)
            self.result.unchanged["runs"] += 1

        steps = existing.steps_by_run.get(run.pk, {}) if not plan.is_new else {}
        new: list[tuple[datetime, int, LedgerRecord]] = []
        when = run_in.started_at

        for j, step_in in enumerate(run_in.steps):
            step = build(Step, tenant=self.tenant, run=run, step_id=step_in.step_id,
                         index=step_in.index, title=step_in.title, status=step_in.status,
                         started_at=step_in.started_at, ended_at=step_in.ended_at,
                         metadata=step_in.metadata)
            stored_step = steps.get(step_in.step_id)
            if self._is_new(f"{path}.steps[{j}]", "steps", step, stored_step, run):
                steps[step_in.step_id] = step
                when = step_in.started_at or when
                new.append((when, 0, step))

        when = run_in.started_at
        for j, mc in enumerate(run_in.model_calls):
            model_call = self._model_call(run, mc)
            model_call.step = self._step_ref(f"{path}.model_calls[{j}].step_id", mc.step_id,
                                             steps)
            stored_mc = existing.model_calls.get(mc.call_id)
            if self._is_new(f"{path}.model_calls[{j}]", "model_calls", model_call, stored_mc,
                            run):
                when = mc.started_at or when
                new.append((when, 1, model_call))

        calls = existing.tool_calls_by_run.get(run.pk, {}) if not plan.is_new else {}
        when = run_in.started_at
        for j, tc in enumerate(run_in.tool_calls):
            call = self._tool_call(run, tc, tools[tc.tool])
            call.step = self._step_ref(f"{path}.tool_calls[{j}].step_id", tc.step_id, steps)
            if tc.retry_of is not None:
                original = calls.get(tc.retry_of)
                if original is None:
                    self._invalid(f"{path}.tool_calls[{j}].retry_of",
                                  f"no earlier tool call {tc.retry_of!r} in run {run.run_id!r}")
                call.retry_of = original
            stored_tc = existing.tool_calls.get(tc.call_id)
            if self._is_new(f"{path}.tool_calls[{j}]", "tool_calls", call, stored_tc, run):
                calls[tc.call_id] = call
                when = tc.started_at or when
                new.append((when, 2, call))

        for j, an in enumerate(run_in.annotations):
            note = build(Annotation, tenant=self.tenant, run=run,
                         annotation_id=an.annotation_id, annotation_kind=an.kind,
                         target_call_id=an.target_call_id, body=an.body, data=an.data,
                         author_label=self.recorded_by)
            stored_an = existing.annotations.get(an.annotation_id)
            if self._is_new(f"{path}.annotations[{j}]", "annotations", note, stored_an, run):
                new.append((when, 3, note))

        if new and run.is_closed and not self.reconciling:
            self._conflict(path, f"run {run.run_id!r} is {run.status} and takes no new records")

        new.sort(key=lambda item: (item[0], item[1]))
        plan.records = [rec for _, _, rec in new]
        self._close_if_ended(path, run_in, plan)
        for rec in plan.records:
            rec.seq = plan.next_seq
            plan.next_seq += 1
            plan.head = rec.seal(plan.head)
        return plan

    def _close_if_ended(self, path: str, run_in: RunIn, plan: _RunPlan) -> None:
        run = plan.run
        if run_in.status == RunStatus.RUNNING:
            return
        if run.is_closed:
            if run.status != run_in.status:
                self._conflict(f"{path}.status", f"run {run.run_id!r} already ended as "
                               f"{run.status}, not {run_in.status}")
            return
        # The end of a run is chained like any record, so the tip is never the only witness.
        plan.records.append(build(
            Annotation, tenant=self.tenant, run=run, annotation_kind=AnnotationKind.RUN_STATUS,
            body=f"run {run_in.status}",
            data={"status": run_in.status.value,
                  "ended_at": run_in.ended_at.isoformat() if run_in.ended_at else None},
            author_label=self.recorded_by))
        plan.status = run_in.status
        plan.ended_at = run_in.ended_at

    def _is_new(self, path: str, kind: str, rec: LedgerRecord, stored: LedgerRecord | None,
                run: Run) -> bool:
        if stored is None:
            return True
        if stored.run_id != run.pk:  # type: ignore[attr-defined]
            self._conflict(path, f"{rec.kind} {_external_id(rec)!r} belongs to run "
                           f"{stored.run.run_id!r}")  # type: ignore[attr-defined]
            return False
        stored_content, incoming = stored.ledger_content(), rec.ledger_content()
        if stored_content != incoming:
            self._conflict(path, f"{rec.kind} {_external_id(rec)!r} was recorded with different "
                           f"{_differences(stored_content, incoming)}")
        else:
            self.result.unchanged[kind] += 1
        return False

    def _step_ref(self, path: str, step_id: str | None, steps: dict[str, Step]) -> Step | None:
        if step_id is None:
            return None
        step = steps.get(step_id)
        if step is None:
            self._invalid(path, f"no step {step_id!r} in this run")
        return step

    def _model_call(self, run: Run, mc: ModelCallIn) -> ModelCall:
        return build(ModelCall, tenant=self.tenant, run=run, call_id=mc.call_id,
                     provider=mc.provider, model=mc.model, messages=mc.messages,
                     response=mc.response, request=mc.request, input_tokens=mc.usage.input_tokens,
                     output_tokens=mc.usage.output_tokens, latency_ms=mc.latency_ms,
                     started_at=mc.started_at, ended_at=mc.ended_at, error=mc.error,
                     classifications=mc.classifications)

    def _tool_call(self, run: Run, tc: ToolCallIn, tool: Tool) -> ToolCall:
        duration = None
        if tc.started_at and tc.ended_at:
            duration = int((tc.ended_at - tc.started_at).total_seconds() * 1000)
        return build(ToolCall, tenant=self.tenant, run=run, call_id=tc.call_id, tool=tool,
                     action_class=tc.action_class, input=tc.input, output=tc.output,
                     status=tc.status, error=tc.error, attempt=tc.attempt,
                     started_at=tc.started_at, ended_at=tc.ended_at, duration_ms=duration,
                     idempotency_key=tc.idempotency_key, supports_rollback=tc.supports_rollback,
                     classifications=tc.classifications, tool_call_ref=tc.tool_call_ref)

    def _invalid(self, path: str, message: str) -> None:
        self.invalid.append({"path": path, "message": message})

    def _conflict(self, path: str, message: str) -> None:
        self.conflicts.append({"path": path, "message": message})

    # -- writing ----------------------------------------------------------------------------

    def _insert(self, plans: list[_RunPlan]) -> None:
        for plan in plans:
            if plan.is_new:
                plan.run.last_seq = plan.next_seq - 1
                plan.run.head_hash = plan.head
                if plan.status:
                    plan.run.status, plan.run.ended_at = plan.status, plan.ended_at
        by_type: dict[type[LedgerRecord], list[LedgerRecord]] = {}
        for plan in plans:
            for rec in plan.records:
                by_type.setdefault(type(rec), []).append(rec)
        insert_all([(Run, [p.run for p in plans if p.is_new])]
                   + [(model, by_type.get(model, []))
                      for model in (Step, ModelCall, ToolCall, Annotation)])

        for kind, model in (("steps", Step), ("model_calls", ModelCall),
                            ("tool_calls", ToolCall), ("annotations", Annotation)):
            self.result.created[kind] += sum(
                1 for r in by_type.get(model, []) if not _is_status_note(r))
        for plan in plans:
            if not plan.is_new and plan.records:
                tip: dict[str, Any] = {"last_seq": plan.next_seq - 1, "head_hash": plan.head}
                if plan.status:
                    tip.update(status=plan.status, ended_at=plan.ended_at)
                Run.objects.advance_tip(plan.run.pk, **tip)


def _is_status_note(rec: LedgerRecord) -> bool:
    return isinstance(rec, Annotation) and rec.annotation_kind == AnnotationKind.RUN_STATUS


def _external_id(rec: LedgerRecord) -> str:
    for attr in ("call_id", "step_id", "annotation_id", "run_id"):
        if hasattr(rec, attr):
            return str(getattr(rec, attr))
    return ""


@dataclass
class _RunPlan:
    run: Run
    is_new: bool
    head: str
    next_seq: int
    records: list[LedgerRecord] = field(default_factory=list)
    status: str | None = None
    ended_at: datetime | None = None


class _ExistingRecords:
    """Records of this batch's external ids that already landed, fetched in a few queries."""

    def __init__(self, tenant: Tenant, runs: Sequence[RunIn], stored_runs: dict[str, Run]):
        run_pks = [r.pk for r in stored_runs.values()]
        tool_ids = [c.call_id for r in runs for c in r.tool_calls]
        retry_refs = [c.retry_of for r in runs for c in r.tool_calls if c.retry_of]
        model_ids = [c.call_id for r in runs for c in r.model_calls]
        note_ids = [a.annotation_id for r in runs for a in r.annotations]

        # Only the steps this batch sends or refers to: a long run's every step, loaded for
        # each append, made an append to a 10,000-step run take 457 ms (quadratic over the
        # life of an agent that records as it goes).
        step_ids = ({s.step_id for r in runs for s in r.steps}
                    | {c.step_id for r in runs for c in r.model_calls if c.step_id}
                    | {c.step_id for r in runs for c in r.tool_calls if c.step_id})
        self.steps_by_run: dict[int, dict[str, Step]] = {}
        if run_pks and step_ids:
            for step in Step.objects.filter(run_id__in=run_pks,
                                            step_id__in=step_ids).select_related("run"):
                self.steps_by_run.setdefault(step.run_id, {})[step.step_id] = step
        # Mostly none of them exist: one light query says which do, full rows only for those.
        tool_ids, model_ids, note_ids = _stored_ids(tenant, tool_ids, model_ids, note_ids)
        self.tool_calls = {c.call_id: c for c in _with_context(
            ToolCall.objects.filter(tenant=tenant, call_id__in=tool_ids), "tool", "retry_of")
        } if tool_ids else {}
        self.tool_calls_by_run: dict[int, dict[str, ToolCall]] = {}
        if run_pks and retry_refs:
            for call in _with_context(ToolCall.objects.filter(
                    run_id__in=run_pks, call_id__in=retry_refs), "tool", "retry_of"):
                self.tool_calls_by_run.setdefault(call.run_id, {})[call.call_id] = call
        self.model_calls = {c.call_id: c for c in _with_context(
            ModelCall.objects.filter(tenant=tenant, call_id__in=model_ids))} if model_ids else {}
        self.annotations = {a.annotation_id: a for a in Annotation.objects.filter(
            tenant=tenant, annotation_id__in=note_ids).select_related("run")} if note_ids else {}


def _stored_ids(tenant: Tenant, tool_ids: list[str], model_ids: list[str], note_ids: list[str]
                ) -> tuple[list[str], list[str], list[str]]:
    """Which of these tool call, model call and annotation ids ``tenant`` has, in one query.

    On PostgreSQL from the record tables' side tables of keys (core/partition_keys.py): a
    partitioned table has an index per month, each probed for every id of the batch (13 of
    them at ten million tool calls); its side table holds the same unique keys in one."""
    kinds = [(i, model, column, ids) for i, (model, column, ids) in enumerate((
        (ToolCall, "call_id", tool_ids), (ModelCall, "call_id", model_ids),
        (Annotation, "annotation_id", note_ids))) if ids]
    found: tuple[list[str], list[str], list[str]] = ([], [], [])
    if not kinds:
        return found
    if connection.vendor != "postgresql":
        parts = [model.objects.filter(tenant=tenant, **{f"{column}__in": ids}).order_by()
                 .values_list(Value(i, output_field=IntegerField()), column)
                 for i, model, column, ids in kinds]
        query = parts[0].union(*parts[1:], all=True) if len(parts) > 1 else parts[0]
        for i, external_id in query:
            found[i].append(external_id)
        return found
    tables = [model._meta.db_table for _, model, _, _ in kinds]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(["to_regclass(%s) IS NOT NULL"] * len(tables)),
                       [keys_table(table) for table in tables])
        sides = cursor.fetchone()
        # Table and column names from the models; the ids are parameters.
        sql = " UNION ALL ".join(
            f"SELECT {i}, {quote(column)} FROM {quote(keys_table(table) if side else table)} "  # noqa: S608
            f"WHERE tenant_id = %s AND {quote(column)} = ANY(%s)"
            for (i, _, column, _), table, side in zip(kinds, tables, sides, strict=True))
        cursor.execute(sql, [value for *_, ids in kinds for value in (tenant.pk, ids)])
        for i, external_id in cursor.fetchall():
            found[i].append(external_id)
    return found


def _with_context(qs: Any, *related: str) -> Any:
    return qs.select_related("run", "step", *related)
