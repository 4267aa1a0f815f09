"""What recording costs the agent: the Python client's time per recorded tool call.

No database and no server: the client points at a closed loopback port, so every batch fails
and is retried in the background while the agent records, the worst case for the agent's
thread (the sender thread competes for the GIL). Three cases:

1. buffer with room: ``with run.tool_call(...) as call: call.output = ...`` per call;
2. buffer full, ``enqueue_timeout`` 50 ms: each record waits at most that long, then is dropped;
3. buffer full, ``enqueue_timeout`` 0: dropped at once.

Baseline, same run: ``json.dumps`` of the same record (the copy every record needs anyway).
Target: median < 100 us per call with room; with a full buffer no call waits longer than its
``enqueue_timeout`` + 10 ms.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
from typing import Any

from bench._common import Timing, git_state, percentile, record_figure, table, verdict
from ledger_client import LedgerClient

TARGET_MEDIAN_US = 100.0
SLACK_MS = 10.0


def closed_port() -> str:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: connection refused
    return f"http://127.0.0.1:{port}"


def record_calls(client: LedgerClient, calls: int, payload: dict[str, Any]) -> Timing:
    samples = []
    with client.run(agent_id="bench-agent", goal="measure recording") as run:
        for i in range(calls):
            started = time.perf_counter()
            with run.tool_call("lookup", action_class="read", input={**payload, "i": i}) as call:
                call.output = payload
            samples.append((time.perf_counter() - started) * 1000)
    return Timing(samples)


def row(case: str, timing: Timing) -> list[Any]:
    us = [ms * 1000 for ms in timing.samples_ms]
    return [case, len(us), timing.median * 1000, percentile(us, 95), percentile(us, 99),
            max(us)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--full-calls", type=int, default=40)
    args = parser.parse_args()
    payload = {"customer": {"email": "ada@example.com", "tier": "pro"},
               "notes": "x" * 200, "items": list(range(20))}
    url = closed_port()
    print(f"bench.client  commit {git_state()}  portal {url} (closed port)")

    roomy = LedgerClient(url, "lpk_bench_key", max_buffered_records=args.calls + 10,
                         close_at_exit=False)
    with_room = record_calls(roomy, args.calls, payload)
    stats = roomy.stats()
    roomy.close(timeout=0)

    rows: list[list[Any]] = [row("record, buffer with room", with_room)]
    bounded_ok = True
    for timeout in (0.05, 0.0):
        full = LedgerClient(url, "lpk_bench_key", max_buffered_records=10,
                            enqueue_timeout=timeout, close_at_exit=False)
        record_calls(full, 10, payload)  # fills the buffer
        timing = record_calls(full, args.full_calls, payload)
        dropped = full.stats().dropped
        full.close(timeout=0)
        bounded_ok &= max(timing.samples_ms) <= timeout * 1000 + SLACK_MS and dropped >= (
            args.full_calls)
        rows.append(row(f"record, buffer full, enqueue_timeout {timeout * 1000:g} ms", timing))

    baseline = []
    for i in range(args.calls):
        record = {"call_id": f"tc-{i}", "tool": "lookup", "input": {**payload, "i": i},
                  "output": payload, "status": "succeeded"}
        started = time.perf_counter()
        json.dumps(record)
        baseline.append((time.perf_counter() - started) * 1000)
    base = Timing(baseline)
    rows.append(row("baseline: json.dumps of the record", base))

    print(table(["case", "calls", "median us", "p95 us", "p99 us", "max us"], rows))
    print(f"while recording with room: {stats.retries} failed sends retried in the background, "
          f"{stats.buffered:,} records buffered, {stats.dropped} dropped")
    record_figure("client", "record a tool call, buffer with room (median)",
                  f"{with_room.median * 1000:.0f} us", f"< {TARGET_MEDIAN_US:g} us",
                  f"json.dumps {base.median * 1000:.0f} us",
                  f"{with_room.median / base.median:.1f}x",
                  with_room.median * 1000 < TARGET_MEDIAN_US)
    record_figure("client", "full buffer: longest wait beyond enqueue_timeout",
                  "bounded" if bounded_ok else "exceeded", f"<= enqueue_timeout + {SLACK_MS:g} ms",
                  "-", "-", bounded_ok)
    print(f"median < {TARGET_MEDIAN_US:g} us with room: "
          f"{verdict(with_room.median * 1000 < TARGET_MEDIAN_US)}; full buffer waits at most "
          f"enqueue_timeout + {SLACK_MS:g} ms: {verdict(bounded_ok)}")


if __name__ == "__main__":
    main()
