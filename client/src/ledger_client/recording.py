"""Runs, steps, model calls and tool calls as the agent records them.

A run is sent as soon as it starts (so the portal shows it running) and every batch repeats its
header; its end is a record of its own. A step is recorded when it ends, together with the calls
made inside it, so the portal gets each step whole (title, timing, status). A step with more
calls than fit in one batch is sent early instead: from then on its calls go out one by one and
its end arrives as a note on the run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
import threading
import uuid
from contextvars import ContextVar, Token
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from .sender import Item

if TYPE_CHECKING:
    from .client import LedgerClient
    from .gating import Clearance

ActionClass = Literal["read", "write", "delete", "exfil"]
RunStatus = Literal["succeeded", "failed", "cancelled"]
ToolCallStatus = Literal["succeeded", "failed", "pending", "denied", "cancelled"]
Label = Literal["public", "internal", "confidential", "restricted", "secret"]

ACTION_CLASSES = frozenset({"read", "write", "delete", "exfil"})
RUN_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
TOOL_CALL_STATUSES = frozenset({"succeeded", "failed", "pending", "denied", "cancelled"})
MAX_ID = 200
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9._:@-]{1,200}\Z")

_current_run: ContextVar[Run | None] = ContextVar("ledger_current_run", default=None)


def current_run() -> Run | None:
    """The run whose ``with`` block this code runs in (per thread / asyncio task), if any."""
    return _current_run.get()


#: how long a run that follows a trace waits for the portal to have its header (seconds)
TRACED_START_TIMEOUT = 5.0
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$")


def trace_context(traceparent: str | None = None) -> tuple[str, str] | None:
    """(trace id, parent span id) of the W3C trace context a run belongs to: ``traceparent``
    if given, else the current OpenTelemetry span (when the agent uses OpenTelemetry), else
    the ``TRACEPARENT`` environment variable. None when there is none, or it is invalid (the
    W3C rule: an invalid traceparent starts a new trace)."""
    if traceparent is None:
        traceparent = _current_traceparent() or os.environ.get("TRACEPARENT", "")
    match = _TRACEPARENT.match(traceparent.strip().lower())
    if not match or match[1] == "ff" or not int(match[2], 16) or not int(match[3], 16):
        return None
    return match[2], match[3]


def _current_traceparent() -> str | None:
    """The current span's context, read only if the agent already imported OpenTelemetry:
    the client itself depends on nothing beyond the standard library."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


def _flush_opentelemetry() -> None:
    api = sys.modules.get("opentelemetry.trace")
    force_flush = getattr(api.get_tracer_provider(), "force_flush", None) if api else None
    if force_flush is not None:
        with contextlib.suppress(Exception):  # the agent's telemetry must not fail its run
            force_flush(5000)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return moment.isoformat()


def _check_id(what: str, value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= MAX_ID:
        raise ValueError(f"{what} must be 1 to {MAX_ID} characters, got {len(value)}")
    return value


def _check_external_id(what: str, value: str, *, optional: bool = False) -> str:
    """The portal's id rule (``[A-Za-z0-9._:@-]{1,200}``), checked here so that a poison id
    fails at the call that names it instead of costing its whole batch at the portal."""
    if optional and value == "":
        return value
    value = _check_id(what, value)
    if not _EXTERNAL_ID.match(value):
        raise ValueError(f"{what} {value!r} must use only letters, digits and . _ : @ -")
    return value


def _check_choice(what: str, value: str, allowed: frozenset[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {sorted(allowed)}, not {value!r}")
    return value


def frozen_json(value: Any) -> str:
    """``value`` as compact JSON text, taken now: later changes by the agent cannot make a
    re-sent record differ from the first send, and a buffered string costs the garbage
    collector nothing (a buffer of parsed dicts made full collections take 100+ ms). Values
    JSON cannot hold become their ``str()``; NaN and infinities become strings."""
    try:
        return json.dumps(value, default=str, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(value), default=str, separators=(",", ":"))


def plain_json(value: Any) -> Any:
    """``value`` as plain JSON data (see ``frozen_json``)."""
    return json.loads(frozen_json(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def error_of(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__qualname__, "message": str(exc)[:4000]}


class Run:
    """One run of an agent. Use it as a context manager (``with client.run(...) as run``): the
    run ends ``succeeded``, or ``failed`` when an exception leaves the block (``cancelled``
    for KeyboardInterrupt), unless ``end()`` was called first."""

    def __init__(self, client: LedgerClient, *, agent_id: str, goal: str = "",
                 run_id: str | None = None, agent_name: str = "", trigger_ref: str = "",
                 metadata: dict[str, Any] | None = None, traceparent: str | None = None):
        self._client = client
        traced = trace_context(traceparent)
        self.trace_id = traced[0] if traced else ""
        if traced:
            # The run the portal records the trace's OpenTelemetry spans in: one run, not two.
            run_id = run_id or f"otel-{traced[0]}"
            metadata = {"trace_id": traced[0], "parent_span_id": traced[1], **(metadata or {})}
        self.run_id = _check_external_id("run_id", run_id or new_id("run"))
        self.agent_id = _check_external_id("agent_id", agent_id)
        trigger_ref = _check_external_id("trigger_ref", trigger_ref, optional=True)
        self.goal = goal
        self.started_at = now()
        self.status: str = "running"
        self._lock = threading.RLock()
        self._step_count = 0
        self._open_step: Step | None = None
        self._token: Token[Run | None] | None = None
        # No status: a run is running until a batch carries its end.
        self._header = frozen_json({
            "run_id": self.run_id, "agent_id": self.agent_id, "agent_name": agent_name,
            "goal": goal, "trigger_ref": trigger_ref, "started_at": _iso(self.started_at),
            "metadata": metadata or {}})
        client._run_started(self)
        self._send(Item(self.run_id, self._header))
        if traced:
            # The run must exist before its first span is exported, so the portal records
            # the spans into it rather than waiting for the trace to end.
            client.flush(timeout=TRACED_START_TIMEOUT)

    def __repr__(self) -> str:
        return f"<Run {self.run_id} {self.status}>"

    @property
    def ended(self) -> bool:
        return self.status != "running"

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Run:
        self._token = _current_run.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            _current_run.reset(self._token)
            self._token = None
        if not self.ended:
            if exc is None:
                self.end("succeeded")
            elif isinstance(exc, KeyboardInterrupt):
                self.end("cancelled")
            else:
                self.end("failed")

    def end(self, status: RunStatus = "succeeded") -> None:
        """Record the run's end (once; later calls do nothing). An open step ends with it."""
        _check_choice("status", status, RUN_STATUSES)
        with self._lock:
            if self.ended:
                return
            if self._open_step is not None:
                self._open_step._finish(None if status == "succeeded" else status)
            self.status = status
            end = frozen_json({"status": status, "ended_at": _iso(now())})
        if self.trace_id:
            _flush_opentelemetry()  # the spans that ended in the run reach it before its end
        self._send(Item(self.run_id, self._header, end=end))
        self._client._run_ended(self)

    # -- records ----------------------------------------------------------------------------

    def step(self, title: str, *, metadata: dict[str, Any] | None = None) -> Step:
        """Open the next plan step: ``with run.step("look up the customer"): ...``. Calls made
        through the run while it is open belong to it. Steps do not nest."""
        with self._lock:
            self._check_open()
            if self._open_step is not None:
                raise RuntimeError(f"step {self._open_step.title!r} is still open; steps do "
                                   "not nest")
            step = Step(self, self._step_count, title, metadata or {})
            self._step_count += 1
            self._open_step = step
            return step

    def model_call(self, model: str, *, provider: str = "", messages: list[Any] | None = None,
                   response: Any = None, input_tokens: int | None = None,
                   output_tokens: int | None = None, latency_ms: int | None = None,
                   started_at: datetime | None = None, ended_at: datetime | None = None,
                   error: Any = None, classifications: dict[str, Label] | None = None,
                   call_id: str | None = None) -> str:
        """Record a model call that has happened; returns its call_id. Without timestamps it
        ends now and started ``latency_ms`` earlier."""
        ended_at = ended_at or now()
        if started_at is None:
            started_at = ended_at - timedelta(milliseconds=latency_ms or 0)
        if latency_ms is None:
            latency_ms = max(0, int((ended_at - started_at).total_seconds() * 1000))
        record = {"call_id": _check_external_id("call_id", call_id or new_id("mc")),
                  "provider": provider, "model": _check_id("model", model),
                  "messages": messages or [], "response": response,
                  "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
                  "latency_ms": latency_ms, "started_at": _iso(started_at),
                  "ended_at": _iso(ended_at), "error": error,
                  "classifications": classifications or {}}
        self._record("model_calls", record)
        return str(record["call_id"])

    def timed_model_call(self, model: str, *, provider: str = "",
                         messages: list[Any] | None = None,
                         classifications: dict[str, Label] | None = None) -> ModelCall:
        """``with run.timed_model_call("gpt-4.1", messages=m) as call: call.response = ...``:
        timed by the block; an exception is recorded as the call's error and re-raised."""
        self._check_open()
        return ModelCall(self, model, provider, messages or [], classifications or {})

    def tool_call(self, tool: str, *, action_class: ActionClass, input: Any = None,
                  call_id: str | None = None, idempotency_key: str = "", attempt: int = 1,
                  retry_of: str | None = None, supports_rollback: bool = False,
                  classifications: dict[str, Label] | None = None,
                  tool_call_ref: str = "") -> ToolCall:
        """``with run.tool_call("send_email", action_class="exfil", input={...}) as call:
        call.output = ...``: timed by the block; an exception is recorded (status ``failed``
        and its error) and re-raised. Without ``with``, call ``finish()``.

        ``tool_call_ref``: the tool call's own id, as the model or framework named it (an
        OpenAI ``tool_calls[].id``...), kept beside the ledger's ``call_id``."""
        self._check_open()
        return ToolCall(self, tool, action_class, {} if input is None else input,
                        call_id=call_id, idempotency_key=idempotency_key, attempt=attempt,
                        retry_of=retry_of, supports_rollback=supports_rollback,
                        classifications=classifications or {}, tool_call_ref=tool_call_ref)

    def note(self, body: str, *, data: dict[str, Any] | None = None,
             target_call_id: str = "") -> str:
        """Add a note to the run's record (an annotation); returns its id."""
        annotation_id = new_id("note")
        self._record("annotations", {"annotation_id": annotation_id, "kind": "note",
                                     "body": body, "data": data or {},
                                     "target_call_id": target_call_id})
        return annotation_id

    # -- gating -----------------------------------------------------------------------------

    def gate(self, tool: str, *, action_class: ActionClass,
             arguments: dict[str, Any] | None = None, call_id: str | None = None,
             approval_timeout: float | None = None) -> Clearance:
        """Ask the portal whether this call may run (waiting for approval if the policy says
        so). Returns a ``Clearance`` (allowed, or sandbox only) or raises a ``GateError``.
        Record the call with the clearance's ``call_id`` and ``idempotency_key``, or use
        ``call_tool`` which does all of it."""
        return self._client._gatekeeper.clear(
            tool, action_class, arguments or {}, run_id=self.run_id, agent_id=self.agent_id,
            call_id=call_id, approval_timeout=approval_timeout)

    def call_tool(self, tool: str, fn: Any, *, action_class: ActionClass,
                  arguments: dict[str, Any] | None = None, dry_run: Any = None,
                  supports_rollback: bool = False,
                  classifications: dict[str, Label] | None = None,
                  approval_timeout: float | None = None, tool_call_ref: str = "") -> Any:
        """Gate, run and record ``fn(**arguments)``: see ``LedgerClient.gated_tool``.
        ``tool_call_ref``: the tool call's own id, as the model named it."""
        from .gating import call_gated

        arguments = dict(arguments or {})
        return call_gated(self._client._gatekeeper, self, tool, action_class, arguments,
                          invoke=lambda key: _call_with_key(fn, arguments, key),
                          dry_run=(None if dry_run is None else
                                   lambda key: _call_with_key(dry_run, arguments, key)),
                          supports_rollback=supports_rollback,
                          classifications=classifications, approval_timeout=approval_timeout,
                          tool_call_ref=tool_call_ref)

    # -- plumbing ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.ended:
            raise RuntimeError(f"run {self.run_id} has ended ({self.status}); it takes no "
                               "new records")

    def _record(self, kind: str, record: dict[str, Any], step: Step | None = None) -> None:
        with self._lock:
            self._check_open()
            step = step or self._open_step
            if step is not None and kind == "annotations":
                # the batch format has no step_id on an annotation: the step goes in its data
                record["data"] = {**record.get("data", {}), "step_id": step.step_id}
            elif step is not None:  # open, or ended and already on its way: either way known
                record["step_id"] = step.step_id
            text = frozen_json(record)
            if step is not None and step._open and not step._sent:
                step._hold(kind, text)
                return
        self._send(Item(self.run_id, self._header, {kind: [text]}, count=1, size=len(text)))

    def _send(self, item: Item) -> None:
        self._client._enqueue(item)


def _call_with_key(fn: Any, arguments: dict[str, Any], key: str) -> Any:
    from .gating import accepts_idempotency_key

    if accepts_idempotency_key(fn):
        return fn(**arguments, idempotency_key=key)
    return fn(**arguments)


class Step:
    """A plan step (see ``Run.step``). Set ``status`` inside the block to override the
    ``succeeded`` / ``failed`` it gets from how the block ends."""

    def __init__(self, run: Run, index: int, title: str, metadata: dict[str, Any]):
        self.run = run
        self.index = index
        self.step_id = f"step-{index}"
        self.title = title[:500]
        self.metadata = metadata
        self.status: str | None = None
        self.started_at = now()
        self._open = True
        self._sent = False  # sent early (spilled)
        self._held: dict[str, list[str]] = {}
        self._held_count = 0
        self._held_size = 0

    def __enter__(self) -> Step:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close(None if exc is None else "failed")

    def close(self, status: str | None = None) -> None:
        """End the step (the ``with`` block does this)."""
        with self.run._lock:
            if self._open:
                self._finish(status)

    def model_call(self, model: str, **kwargs: Any) -> str:
        """``Run.model_call`` inside this step."""
        return self.run.model_call(model, **kwargs)

    def tool_call(self, tool: str, **kwargs: Any) -> ToolCall:
        """``Run.tool_call`` inside this step."""
        return self.run.tool_call(tool, **kwargs)

    def _record_of(self, status: str, ended_at: datetime | None) -> dict[str, Any]:
        return {"step_id": self.step_id, "index": self.index, "title": self.title,
                "status": status[:20], "started_at": _iso(self.started_at),
                "ended_at": _iso(ended_at), "metadata": self.metadata}

    def _hold(self, kind: str, text: str) -> None:
        self._held.setdefault(kind, []).append(text)
        self._held_count += 1
        self._held_size += len(text)
        sender = self.run._client._sender
        # The step, its calls and the run must fit in one batch.
        if (self._held_count + 2 >= sender.max_batch_records
                or self._held_size >= sender.max_batch_bytes // 2):
            self._sent = True
            self._release(self._record_of("", None))

    def _finish(self, status: str | None) -> None:
        # called with the run's lock held
        self._open = False
        self.run._open_step = None
        status = self.status or status or "succeeded"
        ended_at = now()
        if self._sent:
            self._held.setdefault("annotations", []).append(frozen_json({
                "annotation_id": new_id("note"), "kind": "note",
                "body": f"step {self.index} ({self.title}) ended: {status}",
                "data": {"step_id": self.step_id, "status": status,
                         "ended_at": _iso(ended_at)}}))
            self._held_count += 1
            self._release(None)
        else:
            self._release(self._record_of(status, ended_at))

    def _release(self, step_record: dict[str, Any] | None) -> None:
        records = self._held
        count, size = self._held_count, self._held_size
        if step_record is not None:
            text = frozen_json(step_record)
            records = {"steps": [text], **records}
            count, size = count + 1, size + len(text)
        self._held, self._held_count, self._held_size = {}, 0, 0
        if count:
            self.run._send(Item(self.run.run_id, self.run._header, records, count=count,
                                size=size))


class ToolCall:
    """A tool call being recorded (see ``Run.tool_call``). Set ``output`` (and, if you need
    to, ``status`` or ``error``) inside the block."""

    def __init__(self, run: Run, tool: str, action_class: str, input: Any, *,
                 call_id: str | None, idempotency_key: str, attempt: int,
                 retry_of: str | None, supports_rollback: bool,
                 classifications: dict[str, Label], tool_call_ref: str = ""):
        self.run = run
        self.step = run._open_step
        self.tool = _check_external_id("tool", tool)
        self.action_class = _check_choice("action_class", action_class, ACTION_CLASSES)
        self.input = input
        self.call_id = _check_external_id("call_id", call_id or new_id("tc"))
        self.tool_call_ref = _check_external_id("tool_call_ref", tool_call_ref, optional=True)
        self.idempotency_key = _check_external_id("idempotency_key", idempotency_key,
                                                  optional=True)
        self.attempt = attempt
        self.retry_of = retry_of
        if retry_of is not None and attempt < 2:
            self.attempt = 2
        self.supports_rollback = supports_rollback
        self.classifications = classifications
        self.output: Any = None
        self.error: Any = None
        self.status: ToolCallStatus | None = None
        self.started_at = now()
        self.ended_at: datetime | None = None
        self.recorded = False

    def __enter__(self) -> ToolCall:
        self.started_at = now()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None and not self.recorded:
            self.error = error_of(exc)
            self.status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "failed"
        self.finish()

    def finish(self, *, output: Any = None, status: ToolCallStatus | None = None) -> None:
        """Record the call (once). ``status`` defaults to ``failed`` when ``error`` is set,
        else ``succeeded``."""
        if self.recorded:
            return
        if output is not None:
            self.output = output
        if status is not None:
            self.status = status
        self.ended_at = self.ended_at or now()
        status = self.status or ("failed" if self.error is not None else "succeeded")
        _check_choice("status", status, TOOL_CALL_STATUSES)
        self.recorded = True
        record: dict[str, Any] = {
            "call_id": self.call_id, "tool": self.tool, "action_class": self.action_class,
            "input": self.input, "output": self.output, "status": status,
            "error": self.error, "attempt": self.attempt, "retry_of": self.retry_of,
            "started_at": _iso(self.started_at), "ended_at": _iso(self.ended_at),
            "idempotency_key": self.idempotency_key,
            "supports_rollback": self.supports_rollback,
            "classifications": self.classifications}
        if self.tool_call_ref:  # only when given: a portal without the field still takes it
            record["tool_call_ref"] = self.tool_call_ref
        self.run._record("tool_calls", record, step=self.step)


class ModelCall:
    """A model call being timed (see ``Run.timed_model_call``)."""

    def __init__(self, run: Run, model: str, provider: str, messages: list[Any],
                 classifications: dict[str, Label]):
        self.run = run
        self.step = run._open_step
        self.model = model
        self.provider = provider
        self.messages = messages
        self.classifications = classifications
        self.call_id = new_id("mc")
        self.response: Any = None
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.error: Any = None
        self.started_at = now()

    def __enter__(self) -> ModelCall:
        self.started_at = now()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self.error = error_of(exc)
        ended_at = now()
        self.run.model_call(self.model, provider=self.provider, messages=self.messages,
                            response=self.response, input_tokens=self.input_tokens,
                            output_tokens=self.output_tokens, started_at=self.started_at,
                            ended_at=ended_at, error=self.error,
                            classifications=self.classifications, call_id=self.call_id)
