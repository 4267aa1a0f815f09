"""Replaying a recorded run: the one place replays are started, walked and finished.

Sandbox (the default) never runs anything with side effects: a tool's dry-run is called where
it has one, otherwise the recorded output stands in as the stub. Live needs an approved HITL
request and a policy allow for every call, reuses the original idempotency keys, and is
refused while the tenant is in outage mode unless a request to leave sandbox was approved.

Every replayed call gets a fresh policy decision (recorded; a replay may pin a version), and
its output is compared with the recorded one. Each live step is committed before the walk moves
on, and a live call is recorded as ``attempting`` with its idempotency key BEFORE it is sent: a
worker killed mid-call and restarted re-sends the same key (or, for a tool that does not honour
keys, stops and says so), and skips the steps already done. Sandbox steps, which have no side
effects, are committed in groups (``SANDBOX_GROUP_STEPS``): a restarted worker redoes at most
one group's dry-runs. Within a group, the dry-runs of a tool that declares them safe to overlap
(``Tool.dry_run_concurrency`` > 1) are sent from a bounded thread pool, at most that many at
once per tool; everything else (decisions, comparisons, the rows, the progress, and every live
call) stays in the walk's own thread, in step order.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from approvals.models import ApprovalRequest, Kind
from approvals.models import Status as ApprovalStatus
from approvals.services import request_approval
from core.actors import Actor, label_of, person_of
from core.jobs import enqueue_on_commit
from core.locks import held_while_walking, walked_elsewhere
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role
from core.watchdog import beat, claim_stalled, waiting_in_outbox
from policies.models import Decision, Effect, PolicyVersion, VersionStatus
from policies.services import (
    DecisionContext,
    ProposedCall,
    decide_tool_call,
    decision_context,
    unsaved_sandbox_decision,
)
from runs.annotations import annotate
from runs.models import AnnotationKind, ConnectorKind, Run, Tool, ToolCall

from .connectors import (
    ConnectorError,
    ToolResult,
    concurrent_dry_runs,
    connector_for,
    prepared_dry_run,
)
from .connectors.stdio import stdio_servers
from .divergences import follow_up_of
from .models import (
    FollowUp,
    Replay,
    ReplayMode,
    ReplayStatus,
    ReplayStep,
    StepMode,
    StepStatus,
)
from .models.replay import ACTIVE_REPLAY_STATUSES, DONE_STEP_STATUSES
from .replay_compare import compare_outputs

log = logging.getLogger(__name__)
CLASS_RISK = {"read": 0, "write": 1, "delete": 2, "exfil": 3}


class ReplayRefused(PermissionDenied):
    """A replay that may not start (the message says why and what to do)."""


class _Paused(Exception):
    """The walk stops at a HITL checkpoint and resumes on approval."""


class _Stopped(Exception):
    """The walk cannot go on safely; the replay fails with this reason."""


@dataclass(frozen=True)
class WalkOptions:
    """``policy`` / ``compare`` off only for the benchmark's baseline."""

    policy: bool = True
    compare: bool = True


def leave_sandbox_approval(tenant: Tenant, run: Run) -> ApprovalRequest | None:
    return ApprovalRequest.objects.filter(tenant=tenant, kind=Kind.LEAVE_SANDBOX,
                                          run_id=run.run_id,
                                          status=ApprovalStatus.APPROVED).last()


def _pending_leave_sandbox(tenant: Tenant, run: Run, *, by: Actor) -> ApprovalRequest:
    pending = ApprovalRequest.objects.filter(tenant=tenant, kind=Kind.LEAVE_SANDBOX,
                                             run_id=run.run_id,
                                             status=ApprovalStatus.PENDING).last()
    return pending or request_approval(
        tenant, tool="replay", action_class=_riskiest_class(run), kind=Kind.LEAVE_SANDBOX,
        arguments={"run_id": run.run_id, "mode": "live", "reason": "outage mode"},
        run_id=run.run_id, requested_by=label_of(by), requester=person_of(by))


def _riskiest_class(run: Run) -> str:
    classes = set(ToolCall.objects.filter(run=run).values_list("action_class", flat=True))
    riskiest: str = max(classes or {"write"}, key=lambda c: CLASS_RISK.get(c, 1))
    return riskiest


def start_replay(run: Run, *, by: Actor, mode: str = ReplayMode.SANDBOX,
                 until_step: int | None = None,
                 policy_version: PolicyVersion | None = None) -> Replay:
    """Queue a replay of ``run``. Live replays wait for a HITL approval first."""
    tenant = run.tenant
    if not has_role(by, Role.OPERATE, tenant.pk):
        raise PermissionDenied("replaying needs the operate role on this tenant")
    if mode not in ReplayMode.values:
        raise ReplayRefused(f"unknown mode {mode!r}; use sandbox or live")
    if until_step is not None and until_step < 0:
        raise ReplayRefused("--until-step is a plan step index (0 or more)")
    if policy_version is not None and (policy_version.tenant_id != tenant.pk or
                                       policy_version.status == VersionStatus.DRAFT):
        raise ReplayRefused("a replay pins a published or retired policy version of its own "
                            "tenant (back-test drafts instead)")
    leave = None
    if mode == ReplayMode.LIVE and Tenant.objects.filter(pk=tenant.pk,
                                                         outage_mode=True).exists():
        leave = leave_sandbox_approval(tenant, run)
        if leave is None:
            pending = _pending_leave_sandbox(tenant, run, by=by)  # kept: the refusal points at it
            raise ReplayRefused(
                f"tenant {tenant.slug} is in outage mode: replays run in sandbox only. A "
                f"live replay needs an approved request to leave sandbox; request "
                f"{pending.pk} (leave sandbox, run {run.run_id}) is waiting for an "
                "approver. Replay in sandbox meanwhile, or ask again once it is approved.")
    with transaction.atomic():
        replay = Replay.objects.create(
            tenant=tenant, run=run, mode=mode, until_step=until_step,
            policy_version=policy_version, requested_by=person_of(by),
            requested_by_label=label_of(by))
        if mode == ReplayMode.LIVE:
            replay.approval = leave or request_approval(
                tenant, tool="replay", action_class=_riskiest_class(run), kind=Kind.LIVE_REPLAY,
                arguments={"replay": replay.pk, "run_id": run.run_id, "until_step": until_step,
                           "policy_version": getattr(policy_version, "pk", None)},
                run_id=run.run_id, policy_version=policy_version, requested_by=label_of(by),
                requester=person_of(by))
            replay.status = ReplayStatus.WAITING_APPROVAL
            replay.save(update_fields=["approval", "status"])
        annotate(tenant, AnnotationKind.REPLAY,
                 f"replay {replay.pk} requested: {mode}"
                 + (f" until step {until_step}" if until_step is not None else "")
                 + (f" under {policy_version}" if policy_version else ""),
                 run_id=run.run_id, by=by,
                 data={"replay": replay.pk, "event": "requested", "mode": mode,
                       "until_step": until_step,
                       "policy_version": getattr(policy_version, "pk", None),
                       "approval": replay.approval_id})
        schedule_replay(replay)
    return replay


def schedule_replay(replay: Replay, countdown: float | None = None) -> str:
    """Hand the replay to a worker (after commit). Only the newest message may work on it."""
    from .tasks import run_replay

    task_id = uuid.uuid4().hex
    Replay.objects.filter(pk=replay.pk).update(task_id=task_id)
    replay.task_id = task_id
    enqueue_on_commit(run_replay, (replay.pk,), task_id=task_id, countdown=countdown or 0)
    return task_id


def execute_replay(replay_id: int, task_id: str,
                   options: WalkOptions | None = None) -> Replay | None:
    """Task body: claim the replay for this message, pass the approval gate, walk the calls.

    A message that is not the replay's current one finds nothing to do. The current message
    delivered again (its worker died) claims it again and carries on where the steps stop;
    delivered twice while a worker still walks it, the second copy stands down.
    """
    with held_while_walking("replay", replay_id) as ours:
        return _claim_and_walk(replay_id, task_id, options) if ours else None


def _claim_and_walk(replay_id: int, task_id: str, options: WalkOptions | None) -> Replay | None:
    claimed = Replay.objects.filter(pk=replay_id, task_id=task_id,
                                    status__in=ACTIVE_REPLAY_STATUSES).update(
        status=ReplayStatus.RUNNING, worker=f"{socket.gethostname()}:{os.getpid()}",
        heartbeat_at=timezone.now())
    if not claimed:
        return None
    replay = Replay.objects.select_related("tenant", "run__agent", "policy_version__policy",
                                           "approval", "requested_by").get(pk=replay_id)
    # The time limit counts working time: every claim (the first, and each resumption after
    # waiting for a person) starts a fresh one, so a long wait for approval is not "stuck".
    now = timezone.now()
    replay.started_at = replay.started_at or now
    replay.deadline_at = now + timedelta(seconds=settings.LEDGER_REPLAY_TIME_LIMIT + 60)
    replay.save(update_fields=["started_at", "deadline_at"])
    if replay.mode == ReplayMode.LIVE and replay.approval is not None:
        status = replay.approval.status
        if status == ApprovalStatus.PENDING:
            return _set_status(replay, ReplayStatus.WAITING_APPROVAL)
        if status != ApprovalStatus.APPROVED:
            return _finish(replay, ReplayStatus.REJECTED,
                           f"approval request {replay.approval.pk} was {status}")
    try:
        with stdio_servers():  # one server per stdio tool for the walk, stopped with it
            _walk(replay, options or WalkOptions())
    except _Paused:
        return _set_status(replay, ReplayStatus.WAITING_APPROVAL)
    except _Stopped as exc:
        return _finish(replay, ReplayStatus.FAILED, str(exc))
    except Exception as exc:  # a replay always ends with its reason on record
        log.exception("replay %s failed", replay.pk)
        return _finish(replay, ReplayStatus.FAILED, f"{type(exc).__name__}: {exc}"[:2000])
    return _finish(replay, ReplayStatus.SUCCEEDED, "")


def _set_status(replay: Replay, status: str) -> Replay:
    Replay.objects.filter(pk=replay.pk).update(status=status, approval=replay.approval)
    replay.status = status
    return replay


@transaction.atomic
def _finish(replay: Replay, status: str, reason: str) -> Replay:
    done = Replay.objects.filter(pk=replay.pk, status__in=ACTIVE_REPLAY_STATUSES).update(
        status=status, failure_reason=reason, finished_at=timezone.now())
    replay.refresh_from_db()
    if done:
        annotate(replay.tenant, AnnotationKind.REPLAY,
                 f"replay {replay.pk} {status}: {replay.steps_done}/{replay.steps_total} steps, "
                 f"{replay.divergent_steps} divergent" + (f" ({reason})" if reason else ""),
                 run_id=replay.run.run_id, by=replay.requested_by or replay.requested_by_label,
                 data={"replay": replay.pk, "event": "finished", "status": status,
                       "steps_done": replay.steps_done, "steps_total": replay.steps_total,
                       "divergent_steps": replay.divergent_steps, "reason": reason})
    return replay


CALL_FIELDS = ("call_id", "tool_id", "action_class", "input", "output", "status",
               "idempotency_key", "step__index")


def calls_to_replay(replay: Replay) -> list[dict[str, Any]]:
    """The run's tool calls in ledger order, up to the end of plan step ``until_step``."""
    calls = list(ToolCall.objects.filter(run_id=replay.run_id).order_by("seq")
                 .values(*CALL_FIELDS))
    if replay.until_step is None:
        return calls
    for i, call in enumerate(calls):
        index = call["step__index"]
        if index is not None and index > replay.until_step:
            return calls[:i]
    return calls


def _walk(replay: Replay, options: WalkOptions) -> None:
    calls = calls_to_replay(replay)
    tools = {t.pk: t for t in Tool.objects.filter(pk__in={c["tool_id"] for c in calls}
                                                  ).select_related("tenant")}
    Replay.objects.filter(pk=replay.pk).update(steps_total=len(calls))
    replay.steps_total = len(calls)
    earlier = {s.seq: s for s in ReplayStep.objects.filter(replay=replay).select_related(
        "decision")}
    if replay.mode == ReplayMode.SANDBOX:
        _walk_sandbox(replay, calls, tools, earlier, options)
        return
    for seq, call in enumerate(calls, start=1):
        step = earlier.get(seq)
        if step is not None and step.status in DONE_STEP_STATUSES:
            continue
        _stop_unless_still_ours(replay)
        # A live step commits its attempt before the call goes out and its outcome after it
        # answers: one step at a time, never inside a transaction that could roll back the
        # record of a call that was sent.
        step = _replay_call(replay, seq, call, tools[call["tool_id"]], step, options)
        _progress(replay, seq, int(step.flagged))


def _stop_unless_still_ours(replay: Replay) -> None:
    """Nothing more is sent once the replay stopped being this message's to run: the watchdog
    failed it past its deadline, or a newer message took it over."""
    current = Replay.objects.filter(pk=replay.pk).values_list("status", "task_id").first()
    if current != (ReplayStatus.RUNNING, replay.task_id):
        raise _Stopped(f"replay {replay.pk} stopped being run by this worker "
                       f"(now {current[0] if current else 'gone'}); nothing more was sent")


def _progress(replay: Replay, seq: int, flagged: int) -> None:
    beat(Replay, replay.pk, steps_done=seq, divergent_steps=F("divergent_steps") + flagged)
    replay.steps_done = seq


#: A sandbox replay stores its steps in groups: this many, or as many as are done after this
#: many seconds, whichever comes first. The progress moves with every group.
SANDBOX_GROUP_STEPS = 50
SANDBOX_GROUP_SECONDS = 1.0


#: At most this many dry-run threads per walk, whatever the tools' bounds add up to.
MAX_DRY_RUN_THREADS = 32


def _send_off_thread(send: Any) -> ToolResult:
    """A prepared dry-run, on a pool thread. The preparation did the database work in the
    walk's thread; should anything still open a connection here, it is closed, not leaked."""
    try:
        result: ToolResult = send()
        return result
    finally:
        connections.close_all()  # this thread's connections only (they are per thread)


class _DryRunPool:
    """Dry-runs in flight for one sandbox walk: one semaphore per tool holds it to its bound
    (acquired in the walk's thread, so the walk waits rather than queueing without end), one
    thread pool sends. Only network tools that declared a bound > 1 come here."""

    def __init__(self, tools: dict[int, Tool]) -> None:
        self.bounds = {pk: concurrent_dry_runs(tool) for pk, tool in tools.items()}
        self.slots: dict[int, threading.BoundedSemaphore] = {}
        self.pool: ThreadPoolExecutor | None = None

    def concurrent(self, tool: Tool) -> bool:
        return self.bounds.get(tool.pk, 1) > 1

    def submit(self, tool: Tool, call: dict[str, Any]) -> Future[ToolResult]:
        send = prepared_dry_run(tool, call["input"])  # here: egress check, credential
        slots = self.slots.setdefault(tool.pk, threading.BoundedSemaphore(self.bounds[tool.pk]))
        slots.acquire()
        if self.pool is None:
            workers = min(sum(b for b in self.bounds.values() if b > 1), MAX_DRY_RUN_THREADS)
            self.pool = ThreadPoolExecutor(max_workers=workers,
                                           thread_name_prefix="replay-dry-run")
        try:
            future = self.pool.submit(_send_off_thread, send)
        except BaseException:
            slots.release()
            raise
        future.add_done_callback(lambda _done: slots.release())
        return future

    def close(self) -> None:
        if self.pool is not None:
            # Dry-runs not started yet are dropped: their steps are not stored anyway.
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


@dataclass
class _InFlight:
    step: ReplayStep
    call: dict[str, Any]
    tool: Tool
    options: WalkOptions
    future: Future[ToolResult]


class _SandboxGroup:
    """Sandbox steps done but not stored yet. One transaction stores them: their decisions,
    their rows and the progress (one commit per group instead of per step). Nothing in a
    sandbox step has a side effect, so a worker that dies mid-group loses only dry-runs and
    decisions that were never committed; the replay's next message does them again.

    A step whose dry-run is in flight on the pool is in ``steps`` already (its place in the
    order is kept); its outcome is filled in, in the walk's thread, before the group is
    stored."""

    def __init__(self, replay: Replay, dry_runs: _DryRunPool) -> None:
        self.replay = replay
        self.dry_runs = dry_runs
        self.steps: list[ReplayStep] = []
        self.in_flight: list[_InFlight] = []
        self.context: DecisionContext | None = None
        self.started = time.monotonic()
        self.storing = False

    def decision_context(self) -> DecisionContext:
        # Loaded once per group: a version published (or an exception granted or revoked)
        # while the replay runs decides from the next group on.
        if self.context is None:
            self.context = decision_context(self.replay.tenant, self.replay.policy_version)
        return self.context

    def add(self, step: ReplayStep) -> None:
        self.steps.append(step)
        if (len(self.steps) >= SANDBOX_GROUP_STEPS
                or time.monotonic() - self.started >= SANDBOX_GROUP_SECONDS):
            self.store()

    def send_dry_run(self, step: ReplayStep, call: dict[str, Any], tool: Tool,
                     options: WalkOptions) -> ReplayStep:
        self.in_flight.append(_InFlight(step, call, tool, options,
                                        self.dry_runs.submit(tool, call)))
        return step

    def _settle(self) -> BaseException | None:
        """Fill in the outcome of every dry-run in flight, in step order. A dry-run that
        raised ends the group just before its step (as a step-at-a-time walk would have)."""
        failure: BaseException | None = None
        for flight in self.in_flight:
            try:
                result = flight.future.result()
            except BaseException as exc:
                failure = exc
                self.steps = [s for s in self.steps if s.seq < flight.step.seq]
                break
            _outcome(flight.step, flight.call, flight.tool, result, StepMode.DRY_RUN,
                     flight.options, save=False)
        self.in_flight = []
        return failure

    def store(self) -> None:
        failure = self._settle()
        if self.steps:
            self.storing = True
            with transaction.atomic():
                _stop_unless_still_ours(self.replay)
                Decision.objects.bulk_create([s.decision for s in self.steps if s.decision])
                ReplayStep.objects.bulk_create(self.steps)
                _progress(self.replay, self.steps[-1].seq, sum(s.flagged for s in self.steps))
            self.storing = False
        self.steps, self.context, self.started = [], None, time.monotonic()
        if failure is not None:
            raise failure


def _walk_sandbox(replay: Replay, calls: list[dict[str, Any]], tools: dict[int, Tool],
                  earlier: dict[int, ReplayStep], options: WalkOptions) -> None:
    dry_runs = _DryRunPool(tools)
    group = _SandboxGroup(replay, dry_runs)
    try:
        for seq, call in enumerate(calls, start=1):
            step = earlier.get(seq)
            if step is not None and step.status in DONE_STEP_STATUSES:
                continue
            tool = tools[call["tool_id"]]
            if step is not None:
                # A row a sandbox walk did not leave (it stores finished steps only): this
                # one goes the step-at-a-time way, after what is done so far.
                group.store()
                with transaction.atomic():
                    step = _replay_call(replay, seq, call, tool, step, options)
                    _progress(replay, seq, int(step.flagged))
                continue
            group.add(_sandbox_step(replay, seq, call, tool, options, group))
        group.store()
    except Exception:
        if group.steps and not group.storing:
            # The steps done before the failure are kept, as one step at a time kept them.
            try:
                group.store()
            except Exception:
                log.exception("replay %s: storing the steps done before it failed", replay.pk)
        raise
    finally:
        dry_runs.close()


def _sandbox_step(replay: Replay, seq: int, call: dict[str, Any], tool: Tool,
                  options: WalkOptions, group: _SandboxGroup) -> ReplayStep:
    """``_replay_call`` for a new step of a sandbox replay, without writing anything: the
    step and its decision come back unsaved, for the group to store."""
    step = ReplayStep(tenant_id=replay.tenant_id, replay=replay, seq=seq,
                      call_id=call["call_id"], step_index=call["step__index"], tool=tool)
    if options.policy:
        step.decision = unsaved_sandbox_decision(
            group.decision_context(), _proposed_call(replay, call, tool, ReplayMode.SANDBOX),
            asked_by=f"replay {replay.pk}")
        if step.decision.effect == Effect.DENY:
            return _fill(step, StepMode.NOT_CALLED, StepStatus.DENIED, None,
                         f"denied by policy: {step.decision.reason}", flagged=True)
    if group.dry_runs.concurrent(tool):
        return group.send_dry_run(step, call, tool, options)
    result, used = _sandbox_result(call, tool)
    return _outcome(step, call, tool, result, used, options, save=False)


def _effective_mode(replay: Replay) -> str:
    """Outage mode forces sandbox, unless leaving it was approved for this run."""
    if replay.mode != ReplayMode.LIVE:
        return ReplayMode.SANDBOX
    if Tenant.objects.filter(pk=replay.tenant_id, outage_mode=True).exists() and (
            leave_sandbox_approval(replay.tenant, replay.run) is None):
        return ReplayMode.SANDBOX
    return ReplayMode.LIVE


def _proposed_call(replay: Replay, call: dict[str, Any], tool: Tool, mode: str,
                   approval_id: int | None = None) -> ProposedCall:
    args = call["input"] if isinstance(call["input"], dict) else {"input": call["input"]}
    return ProposedCall(
        tool=tool.name, action_class=call["action_class"], arguments=args, mode=mode,
        run_id=replay.run.run_id, call_id=call["call_id"], agent_id=replay.run.agent.agent_id,
        approval_id=approval_id, replay_id=replay.pk)


def _replay_call(replay: Replay, seq: int, call: dict[str, Any], tool: Tool,
                 step: ReplayStep | None, options: WalkOptions) -> ReplayStep:
    if step is None:
        step = ReplayStep(tenant_id=replay.tenant_id, replay=replay, seq=seq,
                          call_id=call["call_id"], step_index=call["step__index"], tool=tool)
    mode = _effective_mode(replay)
    if options.policy:
        waiting_on = step.decision.approval_id if (
            step.status == StepStatus.WAITING_APPROVAL and step.decision) else None
        step.decision = decide_tool_call(
            replay.tenant, _proposed_call(replay, call, tool, mode, waiting_on),
            asked_by=f"replay {replay.pk}", requester=replay.requested_by,
            pinned_version=replay.policy_version, open_approval=mode == ReplayMode.LIVE)
        effect = step.decision.effect
        if effect == Effect.DENY:
            return _save(step, StepMode.NOT_CALLED, StepStatus.DENIED, None,
                         f"denied by policy: {step.decision.reason}", flagged=True)
        if effect == Effect.REQUIRE_APPROVAL and mode == ReplayMode.LIVE:
            _save(step, StepMode.NOT_CALLED, StepStatus.WAITING_APPROVAL, None,
                  step.decision.reason)
            replay.approval_id = step.decision.approval_id
            raise _Paused
        if effect == Effect.SANDBOX_ONLY:
            mode = ReplayMode.SANDBOX
    used: str
    if mode == ReplayMode.LIVE:
        result, used = _call_live(step, call, tool), StepMode.LIVE
    else:
        result, used = _sandbox_result(call, tool)
    return _outcome(step, call, tool, result, used, options, save=True)


def _sandbox_result(call: dict[str, Any], tool: Tool) -> tuple[ToolResult, str]:
    """The tool's dry-run where it has one, otherwise the recorded output as the stub."""
    if tool.has_dry_run and tool.connector != ConnectorKind.NONE:
        result = connector_for(tool).call(call["input"], idempotency_key=None, dry_run=True)
        return result, StepMode.DRY_RUN
    return ToolResult(True, call["output"], "succeeded"), StepMode.STUB


def _outcome(step: ReplayStep, call: dict[str, Any], tool: Tool, result: ToolResult,
             used: str, options: WalkOptions, *, save: bool) -> ReplayStep:
    divergence = None
    if options.compare and used != StepMode.STUB:
        divergence = _divergence(call, result, tool) or None
    return (_save if save else _fill)(
        step, used, StepStatus.SUCCEEDED if result.ok else StepStatus.FAILED, result.output,
        result.error, latency_ms=result.latency_ms, divergence=divergence,
        flagged=bool(divergence))


def _divergence(call: dict[str, Any], result: ToolResult, tool: Tool) -> list[dict[str, Any]]:
    replayed_status = "succeeded" if result.ok else "failed"
    if call["status"] in ("succeeded", "failed") and replayed_status != call["status"]:
        return [{"path": "status", "change": "changed", "recorded": call["status"],
                 "replayed": f"{result.status}: {result.error}" if result.error else
                 result.status}]
    if not result.ok:
        return []
    return compare_outputs(call["output"], result.output, tool.volatile_fields or [],
                           mcp=tool.connector == ConnectorKind.MCP)


def _call_live(step: ReplayStep, call: dict[str, Any], tool: Tool) -> ToolResult:
    """Send the call for real, with the original idempotency key recorded before sending."""
    try:
        connector = connector_for(tool)
    except ConnectorError as exc:
        raise _Stopped(f"step {step.seq} ({call['call_id']}): {exc}; a live replay cannot "
                       "call it") from None
    if step.status == StepStatus.ATTEMPTING:
        if not tool.supports_idempotency:
            _save(step, StepMode.LIVE, StepStatus.FAILED, None,
                  "interrupted while the call was in flight; the tool does not honour "
                  "idempotency keys, so it was not sent again (check it for a side effect)",
                  flagged=True)
            raise _Stopped(f"step {step.seq} ({call['call_id']}) was interrupted mid-call and "
                           f"{tool.name} does not honour idempotency keys: not re-sent")
        key = step.idempotency_key  # the same key as the interrupted attempt, never a new one
    else:
        key = call["idempotency_key"] or f"replay-{step.replay_id}-{call['call_id']}"
    result = ToolResult(False, None, "transient", "not sent")
    for attempt in range(settings.LEDGER_REPLAY_TRANSIENT_RETRIES + 1):
        step.idempotency_key, step.attempts = key, step.attempts + 1
        step.status, step.mode_used = StepStatus.ATTEMPTING, StepMode.LIVE
        step.save()  # committed before the call goes out
        result = connector.call(call["input"], idempotency_key=key, dry_run=False)
        if result.status != "transient":
            break
        time.sleep(min(0.2 * 2 ** attempt, 2.0))
    return result


def _fill(step: ReplayStep, used: str, status: str, output: Any, error: str, *,
          latency_ms: float | None = None, divergence: Any = None,
          flagged: bool = False) -> ReplayStep:
    step.mode_used, step.status, step.output, step.error = used, status, output, error
    step.latency_ms, step.divergence, step.flagged = latency_ms, divergence, flagged
    step.follow_up = FollowUp.OPEN if flagged else ""  # a flag opens a follow-up
    return step


def _save(step: ReplayStep, used: str, status: str, output: Any, error: str, *,
          latency_ms: float | None = None, divergence: Any = None,
          flagged: bool = False) -> ReplayStep:
    _fill(step, used, status, output, error, latency_ms=latency_ms, divergence=divergence,
          flagged=flagged)
    step.save()
    return step


def fail_overdue_replays(now: Any = None) -> int:
    """Beat task body: replays running past their deadline are failed, with the reason."""
    now = now or timezone.now()
    failed = 0
    for replay in Replay.objects.filter(status=ReplayStatus.RUNNING,
                                        deadline_at__lt=now).select_related("tenant", "run"):
        before = replay.steps_done
        _finish(replay, ReplayStatus.FAILED,
                f"still running past its deadline {replay.deadline_at:%Y-%m-%d %H:%M:%S} UTC "
                f"(time limit {settings.LEDGER_REPLAY_TIME_LIMIT} s) after {before} of "
                f"{replay.steps_total} steps; the worker died or hung")
        failed += 1
    return failed


def resume_decided_replays() -> int:
    """Beat task body: replays waiting on an approval that has been decided are handed to a
    worker again (the task also polls; this catches a lost message)."""
    waiting = Replay.objects.filter(status=ReplayStatus.WAITING_APPROVAL).exclude(
        approval__status=ApprovalStatus.PENDING)
    count = 0
    for replay in waiting:
        with transaction.atomic():
            schedule_replay(replay)
        count += 1
    return count


def requeue_stalled_replays(now: Any = None) -> dict[str, int]:
    """Watchdog body: a replay queued or running that no worker has shown moving (its message
    lost with a broker, its worker killed) is handed to a worker again. The new message
    resumes after the last recorded step, re-sending an interrupted call with its idempotency
    key; the old one, if it ever comes back, finds nothing to do. One that stalls too often is
    failed with the reason."""
    from .tasks import run_replay

    def accounted_for(pk: int, status: str) -> bool:
        # a live worker still walking it (a slow call) keeps it; so does a waiting message
        return walked_elsewhere("replay", pk) or waiting_in_outbox(run_replay.name, pk)

    active = Replay.objects.filter(status__in=[ReplayStatus.QUEUED, ReplayStatus.RUNNING])
    requeued = failed = 0
    for stall in claim_stalled(active, now, accounted_for):
        replay = Replay.objects.select_related("tenant", "run").get(pk=stall.pk)
        if stall.exhausted:
            _finish(replay, ReplayStatus.FAILED, stall.reason(
                f"stopped after {replay.steps_done} of {replay.steps_total} steps"))
            failed += 1
            continue
        with transaction.atomic():
            schedule_replay(replay)
        requeued += 1
    return {"requeued": requeued, "failed": failed}


def divergence_report(replay: Replay) -> dict[str, Any]:
    """The divergences of a replay, as the JSON export and the CLI give them."""
    steps = replay.steps.filter(flagged=True).select_related("tool").order_by("seq")
    return {
        "replay": replay.pk, "tenant": replay.tenant.slug, "run_id": replay.run.run_id,
        "mode": replay.mode, "status": replay.status, "until_step": replay.until_step,
        "policy_version": str(replay.policy_version) if replay.policy_version else None,
        "steps_done": replay.steps_done, "steps_total": replay.steps_total,
        "divergent_steps": [{"seq": s.seq, "call_id": s.call_id, "tool": s.tool.name,
                             "mode_used": s.mode_used, "status": s.status, "error": s.error,
                             "differences": s.divergence or [], "follow_up": follow_up_of(s)}
                            for s in steps],
    }
