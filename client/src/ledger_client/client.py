"""``LedgerClient``: the one object an agent holds."""

from __future__ import annotations

import atexit
import functools
import inspect
import os
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from .dead_letter import DeadLetter
from .gating import Clearance, Gatekeeper, accepts_idempotency_key, call_gated
from .http import Transport
from .recording import ActionClass, Label, Run, current_run
from .sender import DeliveryStats, Item, Sender

P = ParamSpec("P")
R = TypeVar("R")


class LedgerClient:
    """Records runs into a ledger-portal and asks it before gated tools run.

    ``url`` and ``api_key`` default to ``LEDGER_URL`` and ``LEDGER_API_KEY``. The key needs
    the ``ingest`` scope. Records go out in batches from a background thread; recording never
    waits longer than ``enqueue_timeout`` (only when the buffer is full, after which the record
    is set aside and counted). On exit (``atexit``, ``close()``, or leaving ``with client:``)
    what is buffered is sent for up to ``shutdown_timeout`` seconds.

    Nothing is lost silently: what cannot be delivered (refused records, a record a server
    error keeps failing on after ``max_server_errors`` tries, records with no room in the
    buffer and the rest of their run, what is left at close) goes to the dead-letter file
    (``dead_letter_path``, default ``$LEDGER_DEAD_LETTER_FILE`` or
    ``~/.ledger/dead-letter.jsonl``) with the reason, in order; ``python -m
    ledger_client.dead_letter FILE`` sends it again.

    Limits (defaults): ``max_buffered_records`` 10,000 records held in memory;
    ``max_batch_records`` 500 and ``max_batch_bytes`` 4 MB per request (the portal's own
    limits are 1,000 and 5 MB); a batch leaves at the latest ``flush_interval`` (1 s) after its
    first record; ``request_timeout`` 10 s per request; retries back off from
    ``backoff_base`` (0.5 s) doubling up to ``backoff_max`` (30 s), with jitter.
    Gating: ``decision_timeout`` (10 s) to get an answer at all, then fail closed;
    ``approval_timeout`` (300 s) to wait for a person.
    """

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 agent_id: str | None = None, max_buffered_records: int = 10_000,
                 max_batch_records: int = 500, max_batch_bytes: int = 4_000_000,
                 flush_interval: float = 1.0, enqueue_timeout: float = 0.05,
                 shutdown_timeout: float = 5.0, request_timeout: float = 10.0,
                 backoff_base: float = 0.5, backoff_max: float = 30.0,
                 decision_timeout: float = 10.0, approval_timeout: float = 300.0,
                 close_at_exit: bool = True,
                 dead_letter_path: str | os.PathLike[str] | None = None,
                 max_server_errors: int = 5):
        url = url or os.environ.get("LEDGER_URL", "")
        api_key = api_key or os.environ.get("LEDGER_API_KEY", "")
        if not url or not api_key:
            raise ValueError("LedgerClient needs the portal's url and an API key (arguments, "
                             "or LEDGER_URL and LEDGER_API_KEY)")
        self.url = url.rstrip("/")
        self.agent_id = agent_id
        self.enqueue_timeout = enqueue_timeout
        self.shutdown_timeout = shutdown_timeout
        transport = Transport(self.url, api_key)
        self._sender = Sender(transport, max_buffered=max_buffered_records,
                              max_batch_records=max_batch_records,
                              max_batch_bytes=max_batch_bytes, flush_interval=flush_interval,
                              request_timeout=request_timeout, backoff_base=backoff_base,
                              backoff_max=backoff_max,
                              dead_letter=DeadLetter(dead_letter_path),
                              max_server_errors=max_server_errors)
        self._gatekeeper = Gatekeeper(transport, decision_timeout=decision_timeout,
                                      approval_timeout=approval_timeout,
                                      request_timeout=request_timeout,
                                      backoff_base=backoff_base, backoff_max=backoff_max)
        self._lock = threading.Lock()
        self._open_runs: dict[str, Run] = {}
        self._closed = False
        self._close_at_exit = close_at_exit
        if close_at_exit:
            atexit.register(self._at_exit)

    def __repr__(self) -> str:
        return f"<LedgerClient {self.url}>"

    # -- runs -------------------------------------------------------------------------------

    def run(self, *, agent_id: str | None = None, goal: str = "", run_id: str | None = None,
            agent_name: str = "", trigger_ref: str = "",
            metadata: dict[str, Any] | None = None, traceparent: str | None = None) -> Run:
        """Start a run (recorded at once as ``running``); use it as a context manager.

        Inside a W3C trace (``traceparent``, else the current OpenTelemetry span, else the
        ``TRACEPARENT`` variable) the run is the one the portal records the trace's spans in
        (``otel-<trace id>``), so an agent using the client and OpenTelemetry gets one run."""
        agent_id = agent_id or self.agent_id
        if not agent_id:
            raise ValueError("a run needs an agent_id (here, or on the LedgerClient)")
        return Run(self, agent_id=agent_id, goal=goal, run_id=run_id, agent_name=agent_name,
                   trigger_ref=trigger_ref, metadata=metadata, traceparent=traceparent)

    # -- gating -----------------------------------------------------------------------------

    def gate(self, tool: str, *, action_class: ActionClass,
             arguments: dict[str, Any] | None = None,
             approval_timeout: float | None = None) -> Clearance:
        """``Run.gate`` for the current run (or outside any run: the decision then names no
        run)."""
        run = current_run()
        if run is not None:
            return run.gate(tool, action_class=action_class, arguments=arguments,
                            approval_timeout=approval_timeout)
        return self._gatekeeper.clear(tool, action_class, arguments or {},
                                      agent_id=self.agent_id or "",
                                      approval_timeout=approval_timeout)

    def gated_tool(self, name: str, *, action_class: ActionClass,
                   dry_run: Callable[..., Any] | None = None, supports_rollback: bool = False,
                   classifications: dict[str, Label] | None = None,
                   approval_timeout: float | None = None
                   ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a tool so that each call asks the portal first::

            @client.gated_tool("refund_payment", action_class="write", dry_run=preview)
            def refund_payment(payment: str, amount_cents: int, idempotency_key: str = ""): ...

        ``allow`` runs it; ``deny`` raises ``ToolCallDenied``; ``require_approval`` waits for
        a person (``approval_timeout``) and then runs it or raises ``ApprovalRejected`` /
        ``ApprovalTimedOut``; ``sandbox_only`` calls ``dry_run`` with the same arguments (or
        raises ``SandboxOnly``). The call's arguments (by name) are what the policy sees and
        what is recorded as input; a fresh idempotency key is recorded with the call and
        passed to the tool (and the dry run) if it takes an ``idempotency_key`` argument.
        Called inside ``with client.run(...)``, the call is recorded in that run (refused
        calls too, as ``denied`` or ``cancelled``). A ``tool_call_ref=`` keyword (the tool
        call's own id, as the model named it) is recorded with the call and not passed to
        the tool, unless the tool itself takes a ``tool_call_ref`` argument."""

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            signature = inspect.signature(fn)
            tool_takes_key = accepts_idempotency_key(fn)
            tool_takes_ref = "tool_call_ref" in signature.parameters
            dry_takes_key = dry_run is not None and accepts_idempotency_key(dry_run)

            @functools.wraps(fn)
            def gated(*args: P.args, **kwargs: P.kwargs) -> R:
                ref = "" if tool_takes_ref else str(kwargs.pop("tool_call_ref", "") or "")
                arguments = _named_arguments(signature, args, kwargs)

                def invoke(key: str) -> Any:
                    return fn(*args, **_with_key(kwargs, key, tool_takes_key))

                def invoke_dry_run(key: str) -> Any:
                    assert dry_run is not None
                    return dry_run(*args, **_with_key(kwargs, key, dry_takes_key))

                return cast(R, call_gated(
                    self._gatekeeper, current_run(), name, action_class, arguments,
                    invoke=invoke, dry_run=invoke_dry_run if dry_run is not None else None,
                    supports_rollback=supports_rollback, classifications=classifications,
                    approval_timeout=approval_timeout, tool_call_ref=ref))

            return gated

        return decorate

    # -- delivery ---------------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far; True once the portal has answered for all of it
        (delivered, or refused and logged), False if ``timeout`` (default
        ``shutdown_timeout``) ran out first. Records still held in an open step wait for it."""
        return self._sender.flush(self.shutdown_timeout if timeout is None else timeout)

    def close(self, timeout: float | None = None) -> bool:
        """End runs still open (as ``cancelled``: whatever ran them is stopping), send what is
        buffered for up to ``timeout`` seconds and stop. Called at exit; safe to call twice.
        Returns whether everything was delivered."""
        with self._lock:
            if self._closed:
                return self._sender.stats().buffered == 0
            self._closed = True
            still_open = list(self._open_runs.values())
        for run in still_open:
            run.end("cancelled")
        if self._close_at_exit:
            atexit.unregister(self._at_exit)
        return self._sender.close(self.shutdown_timeout if timeout is None else timeout)

    def stats(self) -> DeliveryStats:
        """Delivery counters: enqueued, delivered, dropped, rejected, unsent, buffered..."""
        return self._sender.stats()

    def __enter__(self) -> LedgerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- for Run ----------------------------------------------------------------------------

    def _enqueue(self, item: Item) -> None:
        self._sender.enqueue(item, self.enqueue_timeout)

    def _run_started(self, run: Run) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("this LedgerClient is closed")
            self._open_runs[run.run_id] = run

    def _run_ended(self, run: Run) -> None:
        with self._lock:
            self._open_runs.pop(run.run_id, None)

    def _at_exit(self) -> None:
        self.close()


def _named_arguments(signature: inspect.Signature, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> dict[str, Any]:
    """The call's arguments by parameter name (``**kwargs`` spread out), without the key."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    named: dict[str, Any] = {}
    for name, value in bound.arguments.items():
        if name == "idempotency_key":
            continue
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        else:
            named[name] = value
    return named


def _with_key(kwargs: dict[str, Any], key: str, takes_key: bool) -> dict[str, Any]:
    return {**kwargs, "idempotency_key": key} if takes_key else kwargs
