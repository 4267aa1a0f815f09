"""The bounded buffer and the background thread that ships it to ``POST /api/v1/batches/``.

What the agent records becomes an ``Item`` (a run's start or end, or a few records of one run)
in a FIFO buffer; one daemon thread takes items from its head, groups them per run into a
batch and posts it. The portal is idempotent on external ids, so a batch whose answer was lost
is simply sent again.

- Bounded: the buffer holds at most ``max_buffered`` records (in flight included). When it is
  full, ``enqueue`` waits up to its timeout for room, then sets the NEW item aside to the
  dead-letter file and counts it (``stats.dropped``), and every later item of the same run
  follows it there, its end included: what reaches the portal is a prefix of the run, still
  open, never a run with holes; the rest waits in the file, in order.
- Retries: connection errors, timeouts, 429 and 503 (the portal saying "later") are retried,
  in order, with exponential backoff and jitter (``Retry-After`` honoured), for as long as the
  client lives. Any other 5xx is retried ``max_server_errors`` times, then the batch is split
  in halves until the record the server keeps failing on is alone: it goes to the dead-letter
  file and the rest flow on.
- Refusals: a 400 or 409 names bad records by path; the batch is split in halves and re-sent
  until the refused item is alone, which is logged with the portal's error paths and set aside
  to the dead-letter file (``stats.rejected``): one bad record never costs the others. 413
  splits the same way.
- Nothing is dropped silently: every record set aside is counted (``stats.dead_lettered``),
  warned about and written to the dead-letter file (``dead_letter.py``) with the reason; so
  are records still buffered when the client closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from enum import Enum

from .dead_letter import DeadLetter
from .http import PortalUnreachable, Reply, Transport, backoff_delay

BATCH_PATH = "/api/v1/batches/"
RECORD_KINDS = ("steps", "model_calls", "tool_calls", "annotations")
# Statuses that say the records themselves are wrong: bisect to find them.
_RECORD_PROBLEMS = frozenset({400, 409, 413, 422})

log = logging.getLogger("ledger_client")


@dataclass(slots=True)
class Item:
    """Records of one run to append, or the run's start (no records) or end (``end`` set)."""

    run_id: str
    header: str  # JSON object of the run as started; the same in every batch of the run
    records: dict[str, list[str]] = field(default_factory=dict)  # kind -> JSON objects
    count: int = 0  # records, as the portal counts them against its limit
    size: int = 0  # characters of JSON of the records, for the batch size limit
    end: str | None = None  # JSON object {"status": ..., "ended_at": ...}
    seq: int = 0
    enqueued_at: float = 0.0

    @property
    def is_marker(self) -> bool:
        return self.count == 0


@dataclass
class DeliveryStats:
    """Counters since the client started (records, not requests, unless said otherwise)."""

    enqueued: int = 0  # accepted into the buffer
    delivered: int = 0  # acknowledged by the portal (created, or already there)
    dropped: int = 0  # refused because the buffer stayed full past the enqueue timeout
    rejected: int = 0  # refused by the portal (4xx), logged with their error paths
    unsent: int = 0  # still buffered when the client closed and its timeout ran out
    dead_lettered: int = 0  # written to the dead-letter file (dropped, rejected or unsent)
    buffered: int = 0  # waiting or in flight right now
    requests: int = 0  # batch requests the portal accepted (2xx)
    retries: int = 0  # batch requests that failed and were sent again


class _Outcome(Enum):
    SENT = "sent"
    RETRY = "retry"
    SPLIT = "split"  # the records are at fault (400/409/413): isolate them
    REFUSED = "refused"  # the request as a whole is refused (401, 403, 404...): drop it


class Sender:
    def __init__(self, transport: Transport, *, max_buffered: int, max_batch_records: int,
                 max_batch_bytes: int, flush_interval: float, request_timeout: float,
                 backoff_base: float, backoff_max: float, dead_letter: DeadLetter,
                 max_server_errors: int = 5):
        if max_batch_records < 2:
            raise ValueError("max_batch_records must be at least 2 (a run and one record)")
        self.transport = transport
        self.max_buffered = max_buffered
        self.max_batch_records = max_batch_records
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval = flush_interval
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.dead_letter = dead_letter
        self.max_server_errors = max_server_errors
        self._diverted: set[str] = set()  # runs with an item set aside: the rest follows it
        self._cond = threading.Condition()
        self._queue: deque[Item] = deque()
        self._queued = 0  # records in the queue
        self._held = 0  # records queued or in flight: what the bound applies to
        self._next_seq = 1
        self._settled = 0  # every item up to this seq is delivered, refused or given up
        self._flush_upto = 0
        self._closing = False
        self._abandon = threading.Event()
        self._stats = DeliveryStats()
        self._thread: threading.Thread | None = None

    # -- the agent's side -------------------------------------------------------------------

    def enqueue(self, item: Item, timeout: float) -> bool:
        """Buffer ``item``; wait at most ``timeout`` seconds for room. False if dropped."""
        with self._cond:
            if self._closing:
                return self._drop(item, "the client is closed")
            if item.run_id in self._diverted:  # its end too: the run stays open till resent
                return self._drop(item, "an earlier record of the run was set aside")
            if not item.is_marker and self._held + item.count > self.max_buffered:
                deadline = time.monotonic() + timeout
                while self._held + item.count > self.max_buffered:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return self._drop(item, "the buffer is full")
                    self._cond.wait(remaining)
            item.seq, self._next_seq = self._next_seq, self._next_seq + 1
            item.enqueued_at = time.monotonic()
            was_empty = not self._queue
            self._queue.append(item)
            self._queued += item.count
            self._held += item.count
            self._stats.enqueued += item.count
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ledger-client-sender",
                                                daemon=True)
                self._thread.start()
            if was_empty or self._queued >= self.max_batch_records:
                self._cond.notify_all()
            return True

    def _drop(self, item: Item, why: str) -> bool:
        """Set ``item`` aside to the dead-letter file (called holding the lock); every later
        item of its run follows it there."""
        self._stats.dropped += item.count
        self._diverted.add(item.run_id)
        self._set_aside([item], why)
        if item.count and _is_power_of_two(self._stats.dropped):  # not one line per record
            log.warning("ledger: set aside %d record(s) of run %s (%s) to %s; %d so far",
                        item.count, item.run_id, why, self.dead_letter.path,
                        self._stats.dropped)
        return False

    def _set_aside(self, items: list[Item], reason: str, reply: Reply | None = None) -> None:
        """Write ``items`` to the dead-letter file. Never raises: a full disk must not stop
        the agent, so a failure is logged with what was lost."""
        records = sum(item.count for item in items)
        body = reply.body if reply is not None and isinstance(reply.body, dict) else {}
        try:
            self.dead_letter.add(batch_of(items), reason=reason,
                                 run_ids=sorted({item.run_id for item in items}),
                                 records=records, status=reply.status if reply else None,
                                 errors=body.get("errors"))
        except (OSError, ValueError) as exc:
            log.error("ledger: could not write %d record(s) to the dead-letter file %s: %s",
                      records, self.dead_letter.path, exc)
            return
        self._stats.dead_lettered += records

    def flush(self, timeout: float) -> bool:
        """Send everything buffered now; True once all of it was answered by the portal
        (delivered, or refused and logged), False if ``timeout`` ran out first."""
        with self._cond:
            target = self._next_seq - 1
            self._flush_upto = max(self._flush_upto, target)
            self._cond.notify_all()
            deadline = time.monotonic() + timeout
            while self._settled < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self, timeout: float) -> bool:
        """Take no more items; send what is buffered for up to ``timeout`` seconds; set aside
        what is left to the dead-letter file (the batch in flight first, then the queue)."""
        with self._cond:
            self._closing = True
        done = self.flush(timeout)
        with self._cond:
            if not done:
                self._stats.unsent = self._held
                log.warning("ledger: closing with %d record(s) not delivered to %s; set "
                            "aside to %s", self._held, self.transport.url,
                            self.dead_letter.path)
            self._abandon.set()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=max(1.0, self.request_timeout))
        with self._cond:
            left = list(self._queue)
            self._queue.clear()
            self._queued = 0
            if left:
                self._set_aside(left, "the client closed before they were delivered")
        return done

    def stats(self) -> DeliveryStats:
        with self._cond:
            return replace(self._stats, buffered=self._held)

    # -- the sender thread ------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._queue and self._due()):
                    if self._abandon.is_set() or (self._closing and not self._queue):
                        return
                    self._cond.wait(self._sleep_time())
                items = self._take()
            try:
                self._deliver(items)
            except Exception:
                # A bug here must not silently stop delivery (flush would just time out).
                log.exception("ledger: could not deliver %d record(s); set aside to %s",
                              sum(item.count for item in items), self.dead_letter.path)
                with self._cond:
                    self._set_aside(items, "the client failed while sending them")
                self._settle(items, delivered=False)
            if self._abandon.is_set():
                return

    def _due(self) -> bool:
        head = self._queue[0]
        return (self._closing or self._flush_upto >= head.seq
                or self._queued >= self.max_batch_records
                or time.monotonic() - head.enqueued_at >= self.flush_interval)

    def _sleep_time(self) -> float | None:
        if not self._queue:
            return None
        return max(0.001, self._queue[0].enqueued_at + self.flush_interval - time.monotonic())

    def _take(self) -> list[Item]:
        items: list[Item] = []
        runs: set[str] = set()
        records = size = 0
        while self._queue:
            item = self._queue[0]
            new_run = item.run_id not in runs
            more_records = item.count + new_run  # the run itself counts as a record
            more_size = item.size + new_run * len(item.header)
            if items and (records + more_records > self.max_batch_records
                          or size + more_size > self.max_batch_bytes):
                break
            self._queue.popleft()
            self._queued -= item.count
            items.append(item)
            runs.add(item.run_id)
            records += more_records
            size += more_size
        return items

    def _deliver(self, items: list[Item]) -> None:
        chunks = [items]
        attempt = server_errors = 0
        while chunks:
            chunk = chunks[0]
            outcome, reply = self._post(chunk)
            if outcome is _Outcome.RETRY and _server_error(reply):
                server_errors += 1
                if server_errors >= self.max_server_errors:  # it fails on what it is sent
                    outcome = _Outcome.SPLIT
            if outcome is _Outcome.RETRY:
                with self._cond:
                    self._stats.retries += 1
                delay = backoff_delay(attempt, self.backoff_base, self.backoff_max)
                if reply is not None and reply.retry_after is not None:
                    delay = min(reply.retry_after, self.backoff_max)
                attempt += 1
                if self._abandon.wait(delay):
                    self._give_up(chunks)
                    return
                continue
            chunks.pop(0)
            attempt = server_errors = 0
            if outcome is _Outcome.SENT:
                self._settle(chunk, delivered=True)
            elif outcome is _Outcome.SPLIT and len(chunk) > 1:
                middle = len(chunk) // 2
                chunks[0:0] = [chunk[:middle], chunk[middle:]]
            else:
                assert reply is not None
                _log_refusal(chunk, reply)
                with self._cond:
                    self._set_aside(chunk, f"the portal refused them (HTTP {reply.status})",
                                    reply)
                self._settle(chunk, delivered=False)

    def _give_up(self, chunks: list[list[Item]]) -> None:
        """The client closed while these were being retried: into the dead-letter file."""
        left = [item for chunk in chunks for item in chunk]
        with self._cond:
            self._set_aside(left, "the client closed before they were delivered")

    def _post(self, chunk: list[Item]) -> tuple[_Outcome, Reply | None]:
        body = batch_of(chunk)
        try:
            reply = self.transport.request("POST", BATCH_PATH, body=body,
                                           timeout=self.request_timeout)
        except PortalUnreachable as exc:
            log.debug("ledger: portal unreachable, will retry: %s", exc)
            return _Outcome.RETRY, None
        if reply.ok:
            return _Outcome.SENT, reply
        if reply.retryable:
            log.debug("ledger: portal answered %s, will retry", reply.status)
            return _Outcome.RETRY, reply
        if reply.status in _RECORD_PROBLEMS:
            return _Outcome.SPLIT, reply
        return _Outcome.REFUSED, reply

    def _settle(self, chunk: list[Item], delivered: bool) -> None:
        records = sum(item.count for item in chunk)
        with self._cond:
            self._held -= records
            self._settled = max(self._settled, chunk[-1].seq)
            if delivered:
                self._stats.delivered += records
                self._stats.requests += 1
            else:
                self._stats.rejected += records
            self._cond.notify_all()


def batch_of(items: list[Item]) -> bytes:
    """The batch body: one entry per run (its header, its items' records in order, its end if
    any), put together from the JSON texts taken when the records were made."""
    runs: dict[str, tuple[str, dict[str, list[str]], list[str]]] = {}
    for item in items:
        run = runs.get(item.run_id)
        if run is None:
            run = runs[item.run_id] = (item.header, {}, [])
        for kind, texts in item.records.items():
            run[1].setdefault(kind, []).extend(texts)
        if item.end is not None:
            run[2].append(item.end)
    parts = []
    for header, by_kind, ends in runs.values():
        fields = [header[1:-1]]
        fields += [f'"{kind}":[{",".join(texts)}]' for kind, texts in by_kind.items()]
        fields += [end[1:-1] for end in ends[-1:]]
        parts.append("{" + ",".join(field for field in fields if field) + "}")
    return ('{"runs":[' + ",".join(parts) + "]}").encode()


def _log_refusal(chunk: list[Item], reply: Reply) -> None:
    body = reply.body if isinstance(reply.body, dict) else {"detail": reply.body}
    problems = "; ".join(f"{p.get('path')}: {p.get('message')}"
                         for p in body.get("errors", [])[:10] if isinstance(p, dict))
    ids = sorted({item.run_id for item in chunk})
    log.error("ledger: the portal refused %d record(s) of run(s) %s (HTTP %s): %s%s",
              sum(item.count for item in chunk), ", ".join(ids), reply.status,
              body.get("detail", ""), f" [{problems}]" if problems else "")


def _server_error(reply: Reply | None) -> bool:
    """A 5xx other than 503: the server failing on what it was sent, not asking for later."""
    return reply is not None and reply.status >= 500 and reply.status != 503


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0
