"""Asking the portal before a tool runs: ``POST /api/v1/decisions/`` and, when a person must
approve, long-polling ``GET /api/v1/approvals/<id>/?wait=``.

Gating fails closed: when the portal cannot be asked within ``decision_timeout``, the call
does not run (``DecisionUnavailable``). Every question is kept in the portal's policy trail,
linked to the tool call by its call_id.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (
    ApprovalRejected,
    ApprovalTimedOut,
    DecisionUnavailable,
    GateError,
    SandboxOnly,
    ToolCallDenied,
)
from .http import PortalUnreachable, Reply, Transport, backoff_delay
from .recording import new_id, plain_json

if TYPE_CHECKING:
    from .recording import Label, Run

DECISION_PATH = "/api/v1/decisions/"
APPROVAL_PATH = "/api/v1/approvals/{id}/"

log = logging.getLogger("ledger_client")


@dataclass(frozen=True)
class Decision:
    """The portal's answer to one proposed call (one row of its policy trail)."""

    id: int
    effect: str  # allow | deny | require_approval | sandbox_only
    reason: str
    policy: dict[str, Any] | None  # {"name", "version", "checksum"}; None without a policy
    matched_rules: list[dict[str, Any]]
    approval: dict[str, Any] | None  # {"id", "status", "poll"} when a person must decide
    call_id: str = ""

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Decision:
        return cls(id=data["id"], effect=data["effect"], reason=data.get("reason", ""),
                   policy=data.get("policy"), matched_rules=data.get("matched_rules") or [],
                   approval=data.get("approval"), call_id=data.get("call_id", ""))

    @property
    def policy_version(self) -> str | None:
        """``"<policy> v<number>"``, or None when no published policy decided."""
        if not self.policy:
            return None
        return f"{self.policy['name']} v{self.policy['version']}"

    @property
    def approval_id(self) -> int | None:
        return self.approval["id"] if self.approval else None

    def describe(self) -> str:
        rules = ", ".join(str(r.get("name")) for r in self.matched_rules)
        under = self.policy_version or "no published policy"
        return f"{self.effect} under {under}" + (f" (rules: {rules})" if rules else "") + (
            f": {self.reason}" if self.reason else "")


@dataclass(frozen=True)
class Clearance:
    """A call cleared to run: live (``allow``) or as a dry run only (``sandbox``)."""

    decision: Decision
    call_id: str
    idempotency_key: str
    trail: tuple[Decision, ...] = field(default=())  # every answer for this call, in order

    @property
    def sandbox(self) -> bool:
        return self.decision.effect == "sandbox_only"


class Gatekeeper:
    def __init__(self, transport: Transport, *, decision_timeout: float,
                 approval_timeout: float, request_timeout: float, backoff_base: float,
                 backoff_max: float, poll_wait: float = 25.0):
        self.transport = transport
        self.decision_timeout = decision_timeout
        self.approval_timeout = approval_timeout
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_wait = poll_wait

    def clear(self, tool: str, action_class: str, arguments: dict[str, Any], *,
              run_id: str = "", agent_id: str = "", call_id: str | None = None,
              approval_timeout: float | None = None) -> Clearance:
        """Ask until there is an answer that lets the call run, or raise ``GateError``."""
        call_id = call_id or new_id("tc")
        proposed = {"run_id": run_id, "call_id": call_id, "agent_id": agent_id, "tool": tool,
                    "action_class": action_class, "arguments": arguments, "mode": "live"}
        decision = self._ask(proposed)
        trail = [decision]
        waited_until: float | None = None
        while True:
            if decision.effect in ("allow", "sandbox_only"):
                return Clearance(decision, call_id, uuid.uuid4().hex, tuple(trail))
            if decision.effect == "deny":
                raise ToolCallDenied(f"{tool} ({action_class}) denied: {decision.describe()}",
                                     decision)
            if decision.effect != "require_approval" or decision.approval_id is None:
                raise GateError(f"{tool}: unexpected answer {decision.effect!r}", decision)
            approval_id = decision.approval_id
            if waited_until is None:
                waited_until = time.monotonic() + (
                    self.approval_timeout if approval_timeout is None else approval_timeout)
            status = self._wait_for(approval_id, waited_until)
            if status == "approved":
                decision = self._ask({**proposed, "approval_id": approval_id})
                trail.append(decision)
            elif status == "rejected":
                raise ApprovalRejected(f"{tool}: approval request {approval_id} was rejected",
                                       decision, approval_id)
            elif status == "expired":
                raise ApprovalTimedOut(f"{tool}: approval request {approval_id} expired on the "
                                       "portal before anyone decided", decision, approval_id)
            else:
                # The agent moves on without the call: nobody may approve it after that.
                self._withdraw(approval_id)
                raise ApprovalTimedOut(f"{tool}: no decision on approval request "
                                       f"{approval_id} in time ({status}); withdrawn",
                                       decision, approval_id)

    def _withdraw(self, approval_id: int) -> None:
        """Withdraw a request this agent stopped waiting for (best effort: a portal that
        cannot be reached now expires it at its due time)."""
        with contextlib.suppress(PortalUnreachable):
            self.transport.post_json(APPROVAL_PATH.format(id=approval_id) + "withdraw/",
                                     {"reason": "the agent stopped waiting"},
                                     timeout=self.request_timeout)

    def _ask(self, proposed: dict[str, Any]) -> Decision:
        deadline = time.monotonic() + self.decision_timeout
        reply = self._with_retries("POST", DECISION_PATH, plain_json(proposed), deadline,
                                   self.request_timeout)
        if reply is None:
            raise DecisionUnavailable(f"{proposed['tool']}: the portal at "
                                      f"{self.transport.url} could not be asked within "
                                      f"{self.decision_timeout:g} s; the call does not run")
        if reply.status != 201 or not isinstance(reply.body, dict):
            raise DecisionUnavailable(f"{proposed['tool']}: the portal refused the question "
                                      f"(HTTP {reply.status}): {reply.body}")
        return Decision.from_api(reply.body)

    def _wait_for(self, approval_id: int, deadline: float) -> str:
        """The request's status once it is no longer pending, or ``pending`` at the deadline
        (``unreachable`` if the portal could not be asked at the end)."""
        path = APPROVAL_PATH.format(id=approval_id)
        status = "pending"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return status
            wait = min(remaining, self.poll_wait)
            reply = self._with_retries("GET", f"{path}?wait={wait:.1f}", None, deadline,
                                       wait + self.request_timeout)
            if reply is None:
                return "unreachable"
            if not reply.ok or not isinstance(reply.body, dict):
                raise DecisionUnavailable(f"approval request {approval_id}: the portal "
                                          f"answered HTTP {reply.status}: {reply.body}")
            status = str(reply.body.get("status"))
            if status != "pending":
                return status
            if reply.retry_after:  # the portal would not hold another wait of this key now
                time.sleep(min(reply.retry_after, max(0.0, deadline - time.monotonic())))

    def _with_retries(self, method: str, path: str, data: Any, deadline: float,
                      timeout: float) -> Reply | None:
        """The portal's answer (retrying connection errors, 429 and 5xx until ``deadline``),
        or None if there was none in time."""
        attempt = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                if data is None:
                    reply = self.transport.request(method, path,
                                                   timeout=min(timeout, remaining + 1))
                else:
                    reply = self.transport.post_json(path, data,
                                                     timeout=min(timeout, remaining + 1))
                if not reply.retryable:
                    return reply
                log.debug("ledger: %s %s answered %s, retrying", method, path, reply.status)
            except PortalUnreachable as exc:
                log.debug("ledger: %s", exc)
            time.sleep(max(0.0, min(backoff_delay(attempt, self.backoff_base, self.backoff_max),
                                    deadline - time.monotonic())))
            attempt += 1


def accepts_idempotency_key(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes an ``idempotency_key`` keyword argument."""
    try:
        parameter = inspect.signature(fn).parameters.get("idempotency_key")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def call_gated(gatekeeper: Gatekeeper, run: Run | None, tool: str, action_class: str,
               arguments: dict[str, Any], *, invoke: Callable[[str], Any],
               dry_run: Callable[[str], Any] | None, supports_rollback: bool = False,
               classifications: dict[str, Label] | None = None,
               approval_timeout: float | None = None, tool_call_ref: str = "") -> Any:
    """Clear the call, run it (or its dry run) with a fresh idempotency key and record it in
    ``run``. A call that is not cleared is recorded too (``denied``, or ``cancelled`` when
    no answer came in time) before the ``GateError`` is raised."""
    arguments = plain_json(arguments)
    if run is not None:
        run._check_open()
    call_id = new_id("tc")

    def record_refusal(exc: GateError) -> None:
        if run is None:
            return
        waited = isinstance(exc, ApprovalTimedOut | DecisionUnavailable)
        call = run.tool_call(tool, action_class=action_class,  # type: ignore[arg-type]
                             input=arguments, call_id=call_id,
                             supports_rollback=supports_rollback,
                             classifications=classifications, tool_call_ref=tool_call_ref)
        call.error = {"type": type(exc).__name__, "message": str(exc),
                      "decision": exc.decision.id if exc.decision else None}
        call.finish(status="cancelled" if waited else "denied")

    try:
        clearance = gatekeeper.clear(tool, action_class, arguments,
                                     run_id=run.run_id if run else "",
                                     agent_id=run.agent_id if run else "", call_id=call_id,
                                     approval_timeout=approval_timeout)
    except GateError as exc:
        record_refusal(exc)
        raise
    target = invoke
    if clearance.sandbox:
        if dry_run is None:
            refusal = SandboxOnly(f"{tool} may only run as a dry run "
                                  f"({clearance.decision.describe()}) and has none",
                                  clearance.decision)
            record_refusal(refusal)
            raise refusal
        target = dry_run
    if run is None:
        log.debug("ledger: %s cleared outside any run; not recorded", tool)
        return target(clearance.idempotency_key)
    with run.tool_call(tool, action_class=action_class,  # type: ignore[arg-type]
                       input=arguments, call_id=clearance.call_id,
                       idempotency_key=clearance.idempotency_key,
                       supports_rollback=supports_rollback,
                       classifications=classifications, tool_call_ref=tool_call_ref) as call:
        call.output = target(clearance.idempotency_key)
    if clearance.sandbox:
        run.note(f"{tool} ran as a dry run (sandbox_only)", target_call_id=call.call_id,
                 data={"decision": clearance.decision.id})
    return call.output
