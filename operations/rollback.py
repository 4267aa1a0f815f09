"""Rolling back completed tool calls through their tool's compensate hook.

``request_rollback`` (one call) and ``request_run_rollback`` (a whole run) are what the admin
action, the timeline page, the API, the CLI and the incident service call; ``attempt_rollback``
is the body of the Celery task; ``fail_stuck_rollbacks`` the watchdog's.

- Once per call: a unique (tenant, call) row, created in its own savepoint; a concurrent second
  request hits the constraint and returns the first row, whatever its state.
- Each attempt is recorded (attempts + 1, a log entry) in a committed transaction *before* the
  hook is called, with an idempotency key derived from the call, so an attempt re-sent after a
  worker crash carries the same key and the tool can recognise it.
- A transient failure goes back to the queue with exponential backoff, up to
  ``LEDGER_ROLLBACK_MAX_ATTEMPTS``; a permanent one is recorded as failed with its reason.
- A hook that answers ``{"remaining_side_effects": [...]}`` (non-empty) made a partial
  rollback: recorded as ``partial`` with what remains.
- A compensation is a side effect, so it passes the policy engine like any call (mode
  ``rollback``, the call's tool, class, agent and input, the call id ``rollback_key``): the
  decision is recorded and named on the rollback. ``require_approval`` opens an approval request
  bound to that rollback and to who asked; once someone else approved it, asking again goes
  ahead. ``deny`` and ``sandbox_only`` refuse. A whole run goes ahead only when every call to
  compensate would: otherwise nothing is queued and what holds it is named.
- A whole run is rolled back call by call in reverse chain order, one task at a time, each
  task queueing the next when it finishes. The chain STOPS at the first rollback that does not
  end ``succeeded`` (failed or partial): compensations are undone latest-first because earlier
  calls' effects can depend on later ones being undone (refund after cancelling the shipment),
  so going on past a failure could leave a worse state than stopping. The calls not reached are
  marked failed "not attempted", and may be requested again (their hook was never called).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from core.actors import Actor, key_of, label_of, person_of
from core.jobs import enqueue_on_commit
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.models import AnnotationKind, Run, ToolCall, ToolCallStatus

from .models import Rollback, RollbackStatus

# How long a running attempt may go without news before another worker may take it over
# (a crashed worker's message comes back through acks_late / reject_on_worker_lost).
ATTEMPT_LEASE = timedelta(minutes=2)
NOT_ATTEMPTED = "not attempted"


class RollbackRefused(ValidationError):
    pass


def rollback_key(call: ToolCall) -> str:
    """The idempotency key of every compensate attempt of ``call``: stable, so a re-sent
    attempt is recognisable, and different from the call's own key."""
    seed = f"{call.tenant_id}\n{call.call_id}\n{call.idempotency_key}"
    return "rollback-" + hashlib.sha256(seed.encode()).hexdigest()[:40]


def refusal(call: ToolCall) -> str | None:
    """Why ``call`` cannot be rolled back, or None."""
    from .connectors import ConnectorError, connector_for

    tool = call.tool
    if call.status != ToolCallStatus.SUCCEEDED:
        return (f"call {call.call_id} is {call.status}: only a completed (succeeded) call can be "
                "rolled back")
    if not tool.supports_rollback:
        return (f"tool {tool.name} does not support compensation (rollback is not enabled for "
                f"it in the tool registry), so call {call.call_id} cannot be rolled back")
    if not tool.can_compensate:
        return (f"tool {tool.name} declares compensation but has no compensate endpoint in the "
                "tool registry")
    try:
        connector_for(tool)
    except ConnectorError as exc:
        return f"tool {tool.name} has no connector to call its compensate hook: {exc}"
    return None


def _require_operate(tenant_id: int, *, by: Actor) -> None:
    if not has_role(by, Role.OPERATE, tenant_id):
        raise PermissionDenied("rolling back needs the operate role on this tenant")


def _enqueue(rollback_id: int) -> None:
    from .tasks import run_rollback

    enqueue_on_commit(run_rollback, (rollback_id,))


def _create(call: ToolCall, *, by: Actor, incident: Any, batch: str = "", position: int = 0
            ) -> tuple[Rollback, bool]:
    existing = Rollback.objects.filter(tenant_id=call.tenant_id, tool_call=call).first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic():  # a savepoint: the loser of a race keeps its transaction
            rollback = Rollback.objects.create(
                tenant_id=call.tenant_id, tool_call=call, run_id=call.run_id,
                idempotency_key=rollback_key(call), incident=incident, batch=batch,
                position=position,
                requested_by=person_of(by), requested_by_label=label_of(by, default=""))
    except IntegrityError:
        return Rollback.objects.get(tenant_id=call.tenant_id, tool_call=call), False
    return rollback, True


def _requeue_if_never_attempted(rollback: Rollback, *, by: Actor, incident: Any, batch: str = "",
                                position: int = 0) -> bool:
    """A rollback stopped before its hook was ever called may be asked for again."""
    locked = Rollback.objects.select_for_update().get(pk=rollback.pk)
    if locked.status != RollbackStatus.FAILED or locked.attempts:
        return False
    locked.status, locked.last_error, locked.finished_at = RollbackStatus.QUEUED, "", None
    locked.last_activity_at, locked.batch, locked.position = timezone.now(), batch, position
    if incident is not None:
        locked.incident = incident
    locked.save(update_fields=["status", "last_error", "finished_at", "last_activity_at",
                               "batch", "position", "incident"])
    rollback.refresh_from_db()
    return True


def _note_requested(rollback: Rollback, call: ToolCall, *, by: Actor, whole_run: bool) -> None:
    data = {"rollback": rollback.pk, "event": "requested", "idempotency_key":
            rollback.idempotency_key, "whole_run": whole_run, "decision": rollback.decision_id}
    if rollback.incident_id is not None:
        data["incident"] = f"incident-{rollback.incident_id}"
        data["incident_id"] = rollback.incident_id
    annotate(call.tenant, AnnotationKind.ROLLBACK,
             f"rollback of {call.tool.name} call requested", run_id=call.run.run_id, by=by,
             target_call_id=call.call_id, data=data)


def _settled(rollback: Rollback | None) -> bool:
    """Is there a rollback of the call that a new request returns unchanged (everything but
    one stopped before its hook was ever called)?"""
    return rollback is not None and not (rollback.status == RollbackStatus.FAILED
                                         and not rollback.attempts)


def _compensation(call: ToolCall, approval_id: int | None = None) -> Any:
    from policies.models import Mode
    from policies.services import ProposedCall

    return ProposedCall(tool=call.tool.name, action_class=call.action_class,
                        arguments=call.input if isinstance(call.input, dict) else {
                            "input": call.input},
                        mode=Mode.ROLLBACK, run_id=call.run.run_id, call_id=rollback_key(call),
                        agent_id=call.run.agent.agent_id, approval_id=approval_id)


def _asker(*, by: Actor) -> tuple[Any, Any]:
    """(person, API key) of whoever asks: what an approval of the rollback is bound to."""
    return person_of(by), key_of(by)


def _approvals_of(call: ToolCall, *, by: Actor, status: str) -> Any:
    from approvals.models import ApprovalRequest

    person, key = _asker(by=by)
    return ApprovalRequest.objects.filter(
        tenant_id=call.tenant_id, call_id=rollback_key(call), requester=person,
        requester_key=key, status=status, consumed_by__isnull=True).order_by("-id")


def _held_by(call: ToolCall, *, by: Actor) -> str | None:
    """Why the policy would hold the compensation of ``call`` asked by ``by`` (None: it would
    go ahead), without recording a decision."""
    from approvals.models import Status
    from policies.models import Effect
    from policies.services import foreseen_effect

    effect = foreseen_effect(call.tenant, _compensation(call))
    if effect == Effect.ALLOW:
        return None
    if (effect == Effect.REQUIRE_APPROVAL
            and _approvals_of(call, by=by, status=Status.APPROVED).exists()):
        return None
    return effect


def clear_with_policy(call: ToolCall, *, by: Actor) -> Any:
    """The recorded decision that lets the compensation of ``call`` go ahead, taken in its own
    transaction so it stays on the policy trail whatever follows. ``RollbackRefused`` says what
    holds it: a denial, or the approval request it waits for (opened now, or already pending).
    """
    from approvals.models import Status
    from policies.models import Effect
    from policies.services import decide_tool_call

    approved = _approvals_of(call, by=by, status=Status.APPROVED).first()
    if approved is None:
        pending = _approvals_of(call, by=by, status=Status.PENDING).first()
        if pending is not None:
            raise RollbackRefused(
                f"the rollback of call {call.call_id} waits for approval request "
                f"{pending.pk}; ask again once someone else approved it")
    person, key = _asker(by=by)
    decision = decide_tool_call(
        call.tenant, _compensation(call, approved.pk if approved else None), asked_by=str(by),
        requester=person, requester_key=key)
    if decision.effect == Effect.ALLOW:
        return decision
    if decision.effect == Effect.REQUIRE_APPROVAL and decision.approval_id is not None:
        raise RollbackRefused(
            f"the policy requires approval to roll back call {call.call_id}: approval request "
            f"{decision.approval_id} is open; ask again once someone else approved it")
    raise RollbackRefused(f"the policy does not let call {call.call_id} be rolled back "
                          f"({decision.effect}): {decision.reason}")


def request_rollback(call: ToolCall, *, by: Actor, incident: Any = None) -> tuple[Rollback, bool]:
    """Queue the compensation of ``call`` (once); ``(rollback, queued_now)``. A second request
    returns the first rollback unchanged. The policy decides first (``clear_with_policy``)."""
    _require_operate(call.tenant_id, by=by)
    call = ToolCall.objects.select_related("tool", "run__agent", "tenant").get(pk=call.pk)
    _check_incident(incident, call.tenant_id)
    existing = Rollback.objects.filter(tenant_id=call.tenant_id, tool_call=call).first()
    if _settled(existing):
        assert existing is not None
        return existing, False
    reason = refusal(call)
    if reason:
        raise RollbackRefused(reason)
    return _queue_rollback(call, by=by, incident=incident, decision=clear_with_policy(call, by=by))


@transaction.atomic
def _queue_rollback(call: ToolCall, *, by: Actor, incident: Any, decision: Any
                    ) -> tuple[Rollback, bool]:
    existing = Rollback.objects.filter(tenant_id=call.tenant_id, tool_call=call).first()
    if existing is not None:
        if not _requeue_if_never_attempted(existing, by=by, incident=incident):
            return existing, False
        rollback = existing
    else:
        rollback, created = _create(call, by=by, incident=incident)
        if not created:
            return rollback, False
    Rollback.objects.filter(pk=rollback.pk).update(decision=decision)
    rollback.decision = decision
    _note_requested(rollback, call, by=by, whole_run=False)
    if incident is not None:
        _link_incident(incident, call, by=by)
    _enqueue(rollback.pk)
    return rollback, True


def compensable_calls(run: Run) -> QuerySet[ToolCall]:
    """The completed calls of a run whose tool supports compensation, latest first."""
    return (ToolCall.objects.filter(tenant_id=run.tenant_id, run=run,
                                    status=ToolCallStatus.SUCCEEDED,
                                    tool__supports_rollback=True)
            .exclude(tool__compensate_endpoint="").exclude(tool__connector="none")
            .select_related("tool", "run__agent", "tenant").order_by("-seq"))


def request_run_rollback(run: Run, *, by: Actor, incident: Any = None) -> list[Rollback]:
    """Queue the compensation of every completed, compensable call of ``run``, latest first,
    as a chain that stops at the first rollback not ending ``succeeded``. Calls already
    rolled back keep their first rollback (listed, not re-run). Every call to compensate
    passes the policy first; when any would be held, nothing is queued: the held ones are
    decided (opening their approval requests) and named in the refusal."""
    _require_operate(run.tenant_id, by=by)
    _check_incident(incident, run.tenant_id)
    calls = [c for c in compensable_calls(run) if refusal(c) is None]
    if not calls:
        raise RollbackRefused(f"run {run.run_id} has no completed call whose tool supports "
                              "compensation")
    settled = {r.tool_call_id for r in Rollback.objects.filter(
        tenant_id=run.tenant_id, tool_call__in=calls) if _settled(r)}
    to_decide = [c for c in calls if c.pk not in settled]
    held = [c for c in to_decide if _held_by(c, by=by) is not None]
    if held:
        reasons = []
        for call in held:
            try:
                clear_with_policy(call, by=by)
            except RollbackRefused as exc:
                reasons.append(" ".join(exc.messages))
        raise RollbackRefused(f"nothing of run {run.run_id} was queued: " + "; ".join(reasons))
    decisions = {call.pk: clear_with_policy(call, by=by) for call in to_decide}
    return _queue_run_rollback(calls, by=by, incident=incident, decisions=decisions)


@transaction.atomic
def _queue_run_rollback(calls: list[ToolCall], *, by: Actor, incident: Any,
                        decisions: dict[int, Any]) -> list[Rollback]:
    batch = uuid.uuid4().hex
    rollbacks: list[Rollback] = []
    queued: list[Rollback] = []
    for position, call in enumerate(calls):
        rollback, created = _create(call, by=by, incident=incident, batch=batch, position=position)
        if not created:
            created = _requeue_if_never_attempted(rollback, by=by, incident=incident, batch=batch,
                                                  position=position)
        if created:
            queued.append(rollback)
            decision = decisions.get(call.pk)
            if decision is not None:
                Rollback.objects.filter(pk=rollback.pk).update(decision=decision)
                rollback.decision = decision
            _note_requested(rollback, call, by=by, whole_run=True)
            if incident is not None:
                _link_incident(incident, call, by=by)
        rollbacks.append(rollback)
    if queued:
        _enqueue(queued[0].pk)
    return rollbacks


def _check_incident(incident: Any, tenant_id: int) -> None:
    if incident is not None and incident.tenant_id != tenant_id:
        raise RollbackRefused("the incident belongs to another tenant")


def _link_incident(incident: Any, call: ToolCall, *, by: Actor) -> None:
    _incident_links().link_call(incident, call, by=by)


# -- incidents (an app above this one) reach rollbacks through a hook this app owns -----------

class IncidentLinks(Protocol):
    """What a rollback needs of incidents: finding the one it is requested for, and linking the
    call it compensates to it (recorded on the incident's trail)."""

    def find(self, incident_id: int, *, by: Actor) -> Any | None: ...

    def link_call(self, incident: Any, call: ToolCall, *, by: Actor) -> None: ...


_registered_links: list[IncidentLinks] = []


def register_incident_links(links: IncidentLinks) -> None:
    """Called by the incidents app's ``ready``: one registration, the latest wins."""
    _registered_links[:] = [links]


def _incident_links() -> IncidentLinks:
    if not _registered_links:
        raise RollbackRefused("rollbacks for an incident need the incidents app")
    return _registered_links[0]


def find_incident(incident_id: int, *, by: Actor) -> Any | None:
    """The incident ``incident_id`` among those ``by`` may see, or None."""
    return _incident_links().find(incident_id, by=by)


# --- the task's side -------------------------------------------------------------------------

@dataclass(frozen=True)
class Attempt:
    """What the task does next: nothing (``retry_in`` None), or try again after a while."""

    status: str
    retry_in: float | None = None


def backoff_seconds(attempts: int) -> float:
    base = settings.LEDGER_ROLLBACK_BACKOFF_MS / 1000
    cap = settings.LEDGER_ROLLBACK_BACKOFF_MAX_MS / 1000
    return float(min(base * 2 ** max(attempts - 1, 0), cap))


def _claim(rollback_id: int) -> tuple[Rollback | None, float | None]:
    """Take the rollback for one attempt, recording the attempt first (committed before the
    hook is called). ``(None, wait)``: someone else is on it; look again after ``wait``."""
    now = timezone.now()
    with transaction.atomic():
        rollback = Rollback.objects.select_for_update().filter(pk=rollback_id).first()
        if rollback is None or rollback.is_finished:
            return None, None
        if rollback.status == RollbackStatus.RUNNING:
            stale_at = rollback.last_activity_at + ATTEMPT_LEASE
            if stale_at > now:  # a live attempt elsewhere, or a crashed one: look again later
                return None, (stale_at - now).total_seconds() + 1
        rollback.status = RollbackStatus.RUNNING
        rollback.attempts += 1
        rollback.started_at = rollback.started_at or now
        rollback.last_activity_at = now
        rollback.attempt_log = [*rollback.attempt_log, {"attempt": rollback.attempts,
                                                        "started_at": now.isoformat()}]
        rollback.save(update_fields=["status", "attempts", "started_at", "last_activity_at",
                                     "attempt_log"])
    return rollback, None


def attempt_rollback(rollback_id: int) -> Attempt:
    """One attempt at a queued rollback (the Celery task's body)."""
    rollback, wait = _claim(rollback_id)
    if rollback is None:
        if wait is not None:
            return Attempt(RollbackStatus.RUNNING, wait)
        finished = Rollback.objects.filter(pk=rollback_id).first()
        if finished is not None and finished.status == RollbackStatus.SUCCEEDED:
            _queue_next(finished)  # a redelivered message: make sure the chain moved on
        return Attempt(finished.status if finished else "missing")
    call = ToolCall.objects.select_related("tool__tenant", "run", "tenant").get(
        pk=rollback.tool_call_id)
    result = _call_hook(call, rollback)
    return _record(rollback, call, result)


@dataclass(frozen=True)
class HookResult:
    status: str  # succeeded | failed | transient
    output: Any = None
    error: str = ""
    latency_ms: float = 0.0


def _call_hook(call: ToolCall, rollback: Rollback) -> HookResult:
    from .connectors import ConnectorError, connector_for

    try:
        connector = connector_for(call.tool)
        result = connector.compensate(call.input, call.output,
                                      idempotency_key=rollback.idempotency_key)
    except ConnectorError as exc:
        return HookResult("failed", error=f"no usable connector: {exc}")
    except Exception as exc:  # a hook that blows up is a failed rollback, never a lost one
        return HookResult("failed", error=f"{type(exc).__name__}: {exc}")
    status = result.status if result.status in ("succeeded", "failed", "transient") else (
        "succeeded" if result.ok else "failed")
    return HookResult(status, result.output, result.error, result.latency_ms)


def remaining_side_effects(output: Any) -> list[Any]:
    remaining = output.get("remaining_side_effects") if isinstance(output, dict) else None
    if not remaining:
        return []
    return list(remaining) if isinstance(remaining, list | tuple) else [remaining]


def _record(rollback: Rollback, call: ToolCall, result: HookResult) -> Attempt:
    now = timezone.now()
    with transaction.atomic():
        row = Rollback.objects.select_for_update().get(pk=rollback.pk)
        if row.status != RollbackStatus.RUNNING or row.attempts != rollback.attempts:
            return Attempt(row.status)  # the watchdog (or a takeover) got there first
        log = [*row.attempt_log]
        entry = {**log[-1], "result": result.status, "latency_ms": round(result.latency_ms, 1),
                 "ended_at": now.isoformat()}
        if result.error:
            entry["error"] = result.error
        retry_in: float | None = None
        if result.status == "transient" and row.attempts < settings.LEDGER_ROLLBACK_MAX_ATTEMPTS:
            retry_in = backoff_seconds(row.attempts)
            entry["retry_in_s"] = retry_in
            row.status, row.last_error = RollbackStatus.QUEUED, result.error
        elif result.status == "succeeded":
            row.remaining_side_effects = remaining_side_effects(result.output)
            row.status = (RollbackStatus.PARTIAL if row.remaining_side_effects
                          else RollbackStatus.SUCCEEDED)
            row.outcome, row.last_error, row.finished_at = result.output, "", now
        else:
            row.status, row.finished_at, row.outcome = RollbackStatus.FAILED, now, result.output
            row.last_error = result.error or "the compensate hook failed without a reason"
            if result.status == "transient":
                row.last_error = (f"gave up after {row.attempts} attempts; last transient "
                                  f"failure: {row.last_error}")
        log[-1] = entry
        row.attempt_log, row.last_activity_at = log, now
        row.save(update_fields=["status", "last_error", "outcome", "remaining_side_effects",
                                "finished_at", "attempt_log", "last_activity_at"])
        if retry_in is not None:
            return Attempt(row.status, retry_in)
        _note_outcome(row, call)
        if row.status == RollbackStatus.SUCCEEDED:
            _queue_next(row)
        else:
            _stop_batch(row, call)
    return Attempt(row.status)


def _note_outcome(row: Rollback, call: ToolCall) -> None:
    data: dict[str, Any] = {"rollback": row.pk, "event": "finished", "status": row.status,
                            "attempts": row.attempts, "idempotency_key": row.idempotency_key,
                            "remaining_side_effects": row.remaining_side_effects,
                            "error": row.last_error}
    if row.incident_id is not None:
        data["incident"], data["incident_id"] = f"incident-{row.incident_id}", row.incident_id
    body = {RollbackStatus.SUCCEEDED: f"rolled back {call.tool.name} call",
            RollbackStatus.PARTIAL: f"partly rolled back {call.tool.name} call; side effects "
                                    "remain",
            RollbackStatus.FAILED: f"rollback of {call.tool.name} call failed: "
                                   f"{row.last_error}"}[RollbackStatus(row.status)]
    annotate(call.tenant, AnnotationKind.ROLLBACK, body, run_id=call.run.run_id,
             by=row.requested_by or row.requested_by_label or None,
             target_call_id=call.call_id, data=data)


def _queue_next(row: Rollback) -> None:
    if not row.batch:
        return
    following = (Rollback.objects.filter(batch=row.batch, position__gt=row.position,
                                         status=RollbackStatus.QUEUED, attempts=0)
                 .order_by("position").first())
    if following is not None:
        _enqueue(following.pk)


def _stop_batch(row: Rollback, call: ToolCall) -> None:
    if not row.batch:
        return
    reason = (f"{NOT_ATTEMPTED}: the whole-run rollback stopped after the rollback of "
              f"{call.call_id} ended {row.status}")
    now = timezone.now()
    for later in Rollback.objects.select_for_update().filter(
            batch=row.batch, position__gt=row.position, status=RollbackStatus.QUEUED,
            attempts=0).select_related("tool_call__tool", "run", "tenant"):
        later.status, later.last_error, later.finished_at = RollbackStatus.FAILED, reason, now
        later.last_activity_at = now
        later.save(update_fields=["status", "last_error", "finished_at", "last_activity_at"])
        annotate(later.tenant, AnnotationKind.ROLLBACK,
                 f"rollback of {later.tool_call.tool.name} call not attempted",
                 run_id=later.run.run_id, target_call_id=later.tool_call.call_id,
                 data={"rollback": later.pk, "event": "not_attempted", "status": later.status,
                       "error": reason})


def fail_stuck_rollbacks(now: Any = None) -> int:
    """Watchdog (beat): a rollback queued or running with no news for longer than
    ``LEDGER_ROLLBACK_TIME_LIMIT`` seconds is marked failed, with the reason, annotated."""
    now = now or timezone.now()
    limit = timedelta(seconds=settings.LEDGER_ROLLBACK_TIME_LIMIT)
    stuck_ids = list(Rollback.objects.filter(
        status__in=[RollbackStatus.QUEUED, RollbackStatus.RUNNING],
        last_activity_at__lt=now - limit).values_list("pk", flat=True)[:1000])
    failed = 0
    for rollback_id in stuck_ids:
        with transaction.atomic():
            row = (Rollback.objects.select_for_update()
                   .filter(pk=rollback_id, status__in=[RollbackStatus.QUEUED,
                                                       RollbackStatus.RUNNING],
                           last_activity_at__lt=now - limit).first())
            if row is None:
                continue
            was = row.status
            row.status, row.finished_at, row.last_activity_at = RollbackStatus.FAILED, now, now
            row.last_error = (f"stuck {was} for more than {settings.LEDGER_ROLLBACK_TIME_LIMIT} "
                              f"s after {row.attempts} attempt(s); marked failed by the "
                              "watchdog. The hook may or may not have run: check the tool "
                              f"for idempotency key {row.idempotency_key}")
            row.save(update_fields=["status", "finished_at", "last_activity_at", "last_error"])
            call = ToolCall.objects.select_related("tool", "run", "tenant").get(
                pk=row.tool_call_id)
            _note_outcome(row, call)
            _stop_batch(row, call)
            failed += 1
    return failed
