"""Reads that may be stale by seconds, from a PostgreSQL read replica; everything else from the
primary.

Nothing goes to the replica by accident. A read is sent there only when its code says so:

- ``with stale_ok_reads():`` around the reads of a page or job that tolerate being a few
  seconds behind (ledger lists, a run's timeline, an export part's rows, a back-test's stream
  of recorded calls);
- ``@stale_ok`` on a read-only view: the same, and if the replica fails under the view, the
  view runs once more on the primary (the page still answers);
- ``stale_ok_job(job)`` for a background job (an export part, a back-test): the replica serves
  it only once it has replayed everything committed before the job started.

Inside that block the router still keeps on the primary:

- every write (``db_for_write`` is always the primary), and every read made while a
  transaction is open on the primary (a read in a transaction that writes must see its own
  writes, and a ``select_for_update`` must lock the primary's row);
- the reads of a browser that changed something moments ago (``ReadYourWritesMiddleware``):
  the page it lands on after a POST shows what it did;
- who may do what: users, groups, sessions, tenants, roles, API keys and tokens (the apps in
  ``ALWAYS_PRIMARY``): a revoked role or key takes effect at once, never a replica lag later.

The replica is used only while it is healthy: reachable, and replaying within
``LEDGER_REPLICA_MAX_LAG_SECONDS`` of the primary. That is measured on the replica
(``now() - pg_last_xact_replay_timestamp()`` when it has WAL it has not replayed yet; 0 when it
has replayed all it received), at most once every ``LEDGER_REPLICA_CHECK_SECONDS`` per process.
A job that must see everything committed before it started passes ``caught_up_to`` (the
primary's WAL position, :func:`primary_position`): the replica serves it only once it has
replayed that far. Unset ``DATABASE_REPLICA_URL`` (SQLite included): there is no replica alias,
no router, and ``stale_ok_reads`` reads the primary, exactly as a single database does.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from django.conf import settings
from django.db import (
    DEFAULT_DB_ALIAS,
    InterfaceError,
    OperationalError,
    connections,
)
from django.db.models import Model
from django.http import HttpRequest, HttpResponse

from .metrics import REPLICA_LAG, STALE_OK_READS

log = logging.getLogger(__name__)

REPLICA = "replica"
#: Apps whose rows say who may do what: read on the primary, whatever the block says.
#: ``ledger_portal`` is the label of ``core`` (tenants, roles, API keys, tokens, sign-ins).
ALWAYS_PRIMARY = frozenset({"auth", "contenttypes", "sessions", "admin", "guardian", "axes",
                            "ledger_portal"})

# Where the reads of the current stale-ok block go (REPLICA or the primary); None: no block.
_reads_from: ContextVar[str | None] = ContextVar("ledger_stale_ok_reads", default=None)
# This request's client wrote a moment ago: it reads the primary (ReadYourWritesMiddleware).
_own_writes: ContextVar[bool] = ContextVar("ledger_reads_own_writes", default=False)
#: The cookie a browser carries for a while after it changed something.
READ_PRIMARY_COOKIE = "ledger_read_primary"

P = ParamSpec("P")
R = TypeVar("R")

_LAG_SQL = """
SELECT CASE WHEN NOT pg_is_in_recovery() THEN 0
            WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END
"""


def replica_configured() -> bool:
    return REPLICA in settings.DATABASES


@dataclass
class _Health:
    """This process's last look at the replica (one per process, shared by its threads)."""

    checked_at: float = float("-inf")
    usable: bool = False
    reason: str = "unchecked"


_health = _Health()
_health_lock = threading.Lock()


def _measure() -> tuple[bool, str]:
    """(usable, why) from one query on the replica; a connection error is "down"."""
    try:
        with connections[REPLICA].cursor() as cursor:
            cursor.execute(_LAG_SQL)
            (lag,) = cursor.fetchone()
    except (OperationalError, InterfaceError) as exc:
        connections[REPLICA].close()  # the next look connects afresh
        return False, f"down ({type(exc).__name__}: {str(exc).strip()[:200]})"
    if lag is None:  # nothing replayed since it started, and WAL waiting: unknown, so not fresh
        return False, "lagging (no replayed transaction yet)"
    REPLICA_LAG.set(float(lag))
    limit = settings.LEDGER_REPLICA_MAX_LAG_SECONDS
    if float(lag) > limit:
        return False, f"lagging ({float(lag):.1f} s behind, more than {limit} s)"
    return True, "ok"


def replica_usable(now: float | None = None) -> bool:
    """Whether stale-ok reads may go to the replica now (looked at again once the last look
    is ``LEDGER_REPLICA_CHECK_SECONDS`` old). A change is logged once, not per request."""
    if not replica_configured():
        return False
    now = time.monotonic() if now is None else now
    # one look at a time per process: the threads that come meanwhile wait for its answer
    # (at most the replica's connect_timeout) rather than asking too
    with _health_lock:
        if now - _health.checked_at < settings.LEDGER_REPLICA_CHECK_SECONDS:
            return _health.usable
        usable, reason = _measure()
        if usable != _health.usable or reason.split(" ")[0] != _health.reason.split(" ")[0]:
            (log.info if usable else log.warning)(
                "read replica %s: stale-ok reads go to the %s", reason,
                "replica" if usable else "primary")
        _health.checked_at, _health.usable, _health.reason = now, usable, reason
        return usable


def mark_replica_down(reason: str) -> None:
    """A query on the replica failed: the primary serves until the next look says otherwise."""
    with _health_lock:
        if _health.usable:
            log.warning("read replica %s: stale-ok reads go to the primary", reason)
        _health.checked_at, _health.usable, _health.reason = time.monotonic(), False, reason


def primary_position() -> str | None:
    """The primary's current WAL position: what a replica must have replayed to hold every
    transaction committed so far (None without a replica)."""
    if not replica_configured():
        return None
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        return str(cursor.fetchone()[0])


#: How long a job waits for the replica to replay up to its start (it usually takes
#: milliseconds: the position includes the job's own claim) before reading the primary.
CATCH_UP_SECONDS = 2.0


def _replayed_to(position: str) -> bool:
    deadline = time.monotonic() + CATCH_UP_SECONDS
    try:
        with connections[REPLICA].cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn "
                               "OR NOT pg_is_in_recovery()", [position])
                if cursor.fetchone()[0]:
                    return True
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
    except (OperationalError, InterfaceError) as exc:
        mark_replica_down(f"down ({type(exc).__name__})")
        return False


def _choose(caught_up_to: str | None) -> tuple[str, str]:
    """(alias, reason) for a stale-ok block starting now."""
    if not replica_configured():
        return DEFAULT_DB_ALIAS, "no_replica"
    if connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return DEFAULT_DB_ALIAS, "in_transaction"
    if _own_writes.get():
        return DEFAULT_DB_ALIAS, "own_writes"
    if not replica_usable():
        return DEFAULT_DB_ALIAS, _health.reason.split(" ")[0]
    if caught_up_to is not None and not _replayed_to(caught_up_to):
        return DEFAULT_DB_ALIAS, "behind_position"
    return REPLICA, "ok"


@dataclass
class _Block:
    alias: str
    wrote: bool = False  # a write was routed while the block was open


_block: ContextVar[_Block | None] = ContextVar("ledger_stale_ok_block", default=None)


@contextmanager
def _stale_block(caught_up_to: str | None) -> Iterator[_Block]:
    alias, reason = _choose(caught_up_to)
    if replica_configured():
        STALE_OK_READS.labels(served_by="replica" if alias == REPLICA else "primary",
                              reason=reason).inc()
    block = _Block(alias)
    token, outer = _reads_from.set(alias), _block.set(block)
    try:
        yield block
    finally:
        _reads_from.reset(token)
        _block.reset(outer)


@contextmanager
def stale_ok_reads(caught_up_to: str | None = None) -> Iterator[str]:
    """Reads in this block may come from the replica (decided once, at its start, so the block
    reads one server); yields the alias they go to, for raw SQL and ``.using()``."""
    with _stale_block(caught_up_to) as block:
        yield block.alias


def stale_ok(view: Callable[P, R]) -> Callable[P, R]:
    """A read-only view whose reads may be stale by seconds. If the database fails under it
    while it reads the replica (a replica stopped since the last look), the replica is taken
    as down and the view runs once more on the primary, unless it had written something by
    then (a view that records what it showed): then the failure stands (a 503), nothing is
    recorded twice. Had the primary failed instead, the second run fails as well (a 503)."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        block = None
        try:
            with _stale_block(None) as block:
                return view(*args, **kwargs)
        except (OperationalError, InterfaceError) as exc:
            if block is None or block.alias != REPLICA or block.wrote:
                raise
            _replica_failed(exc)
            return view(*args, **kwargs)  # no block: the primary
    return wrapped


def _replica_failed(exc: BaseException) -> None:
    mark_replica_down(f"down ({type(exc).__name__}: {str(exc).strip()[:200]})")
    STALE_OK_READS.labels(served_by="primary", reason="failed_over").inc()
    connections[REPLICA].close()


def stale_ok_job(job: Callable[[str], R]) -> R:
    """Run a background job whose reads may come from the replica, given the alias they go to
    (for raw SQL and ``.using()``; ORM reads are routed by the block). The replica serves it
    only once it has replayed everything committed before the job started (the export's
    request, the back-test's draft rules), so the job sees what it would see on the primary
    then. If the database fails under a job reading the replica, the job runs again from the
    start on the primary: jobs given here must be safe to redo (they are: a job row's
    claim, then idempotent writes)."""
    import psycopg

    block = None
    try:
        with _stale_block(primary_position()) as block:
            return job(block.alias)
    except (OperationalError, InterfaceError, psycopg.OperationalError,
            psycopg.InterfaceError) as exc:  # its raw SQL meets psycopg's own errors
        if block is None or block.alias != REPLICA:
            raise
        _replica_failed(exc)
        return job(DEFAULT_DB_ALIAS)


def read_alias() -> str:
    """Where raw SQL in the current block reads: the replica in a replica block (and no
    transaction open on the primary), the primary otherwise."""
    if _reads_from.get() == REPLICA and not connections[DEFAULT_DB_ALIAS].in_atomic_block:
        return REPLICA
    return DEFAULT_DB_ALIAS


class ReadYourWritesMiddleware:
    """A request that changes something (any but GET, HEAD, OPTIONS) reads the primary, and so
    does its browser afterwards, until any replica it could be sent to holds that change: for
    the longest lag a replica is used with, plus the time between two looks at it. The
    operator who annotates a run and lands on its timeline sees the annotation. Installed with
    the replica. The cookie says nothing secret: a client that forges it only reads the
    primary."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        changes = request.method not in ("GET", "HEAD", "OPTIONS")
        token = _own_writes.set(changes or READ_PRIMARY_COOKIE in request.COOKIES)
        try:
            response = self.get_response(request)
        finally:
            _own_writes.reset(token)
        # only a signed-in browser's pages read the replica (agents' API reads never do)
        if changes and settings.SESSION_COOKIE_NAME in request.COOKIES:
            response.set_cookie(
                READ_PRIMARY_COOKIE, "1", httponly=True, samesite="Lax",
                secure=request.is_secure(),
                max_age=settings.LEDGER_REPLICA_MAX_LAG_SECONDS
                + settings.LEDGER_REPLICA_CHECK_SECONDS + 1)
        return response


class ReplicaRouter:
    """Installed only when ``DATABASE_REPLICA_URL`` is set (``settings.DATABASE_ROUTERS``)."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        # An explicit primary, never None: Django would otherwise follow an instance's own
        # database (a row read from the replica would drag later reads there).
        if (_reads_from.get() == REPLICA and model._meta.app_label not in ALWAYS_PRIMARY
                and not connections[DEFAULT_DB_ALIAS].in_atomic_block):
            return REPLICA
        return DEFAULT_DB_ALIAS

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        block = _block.get()
        if block is not None:
            block.wrote = True
        return DEFAULT_DB_ALIAS

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool | None:
        # the replica holds the primary's rows: a row read there may be linked to one here
        if {obj1._state.db, obj2._state.db} <= {DEFAULT_DB_ALIAS, REPLICA}:
            return True
        return None

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db == REPLICA else None
