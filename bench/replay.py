"""Sandbox replay of a run with 1,000 tool calls against a dry-run tool of 0, 20 and 100 ms.

    .venv/bin/python -m bench.replay [--tool-calls 1000] [--tool-latency-ms 0,20,100]
                                     [--concurrency 8] [--repeat 3] [--baseline-repeat 1]
                                     [--keep]

Targets (``record_figure``): the whole sandbox replay (fresh policy decision per call,
recorded; dry-runs over HTTP on loopback for some tools, recorded outputs as stubs for the
rest; comparison with the recorded outputs; a ReplayStep per call, committed with its decision
and the progress in groups of ``operations.replay.SANDBOX_GROUP_STEPS``) in under 10 s of wall
time with a tool that takes 20 ms and with one that takes 100 ms to answer a dry-run, and in
under 2 s with a tool that answers at once.

The run is ``bench.run_detail.big_run`` (1,000 tool calls over 50 plan steps, support-triage's
tools). ``get_customer`` and ``update_ticket`` get an HTTP connector with a dry-run (header
and flag) served by a ``ThreadingHTTPServer`` on 127.0.0.1 that waits ``--tool-latency-ms``
and answers the arguments it got; they declare ``dry_run_concurrency`` = ``--concurrency``, so
the walk keeps up to that many of each one's dry-runs in flight. The other tools have no
connector, so their recorded output stands in. A published policy of 5 rules decides every
call. Each measured replay is walked in this process by the same ``execute_replay`` a worker
runs (no broker in the timing).

Baselines in the same run, per latency: the same replay with the tools at
``dry_run_concurrency`` 1 (one dry-run at a time, as before it could be raised); at 0 ms also
the walk with policy and comparison turned off (``WalkOptions(policy=False, compare=False)``,
a flag of the service that exists for this benchmark only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    record_figure,
    table,
)

TARGET_S = 10.0  # with a 20 ms and a 100 ms tool
INSTANT_TARGET_S = 2.0  # with a tool that answers at once
DRY_RUN_TOOLS = {"get_customer": ("header", "X-Dry-Run"), "update_ticket": ("flag", "dry_run")}


class DryRunTool(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms ACK wait)
    latency_s = 0.0  # how long the tool takes to answer; set per phase

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.latency_s:
            time.sleep(self.latency_s)
        answer = json.dumps({"dry_run": True, "echo": json.loads(body or b"null")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


def prepare(tool_calls: int, url: str) -> tuple[Any, Any, Any]:
    from django.contrib.auth.models import User

    from bench.run_detail import big_run, ingest_run
    from core.models import Tenant
    from core.services import grant_role
    from policies.models import Policy, Rule
    from policies.services import create_draft, publish_policy_version
    from runs.models import Run, Tool

    tenant = Tenant.objects.create(slug="bench-replay", name="Bench replay")
    run = big_run(tenant.slug, tool_calls=tool_calls)
    ingest_run(tenant, run)
    for name, (via, flag) in DRY_RUN_TOOLS.items():
        Tool.objects.filter(tenant=tenant, name=name).update(
            connector="http", endpoint=f"{url}/{name}", dry_run_via=via, dry_run_name=flag,
            volatile_fields=["ts", "$.echo.request_id"])
    operator = User.objects.create_user("bench-operator")
    publisher = User.objects.create_user("bench-publisher")
    for role in ("operate", "view_ledger"):
        grant_role(operator, role, tenant)
    grant_role(publisher, "manage_policies", tenant)
    policy = Policy.objects.create(tenant=tenant, name="bench-tools")
    draft = create_draft(policy, by=None, change_note="bench rules")
    rules: list[tuple[str, dict[str, Any]]] = [
            ("no deletes", {"action_classes": ["delete"], "effect": "deny"}),
            ("exfil needs a person live", {"action_classes": ["exfil"], "modes": ["live"],
                                           "effect": "require_approval"}),
            ("writes sandboxed in outage", {"action_classes": ["write"], "outage": "only",
                                            "effect": "sandbox_only"}),
            ("big refunds", {"tool": "refund_*", "condition": "args.amount_cents > 100000",
                             "effect": "require_approval"}),
            ("frozen", {"tool": "drop_database", "effect": "deny"})]
    for i, (name, fields) in enumerate(rules):
        Rule.objects.create(tenant=tenant, version=draft, position=i, name=name, **fields)
    publish_policy_version(draft, by=publisher)
    return tenant, Run.objects.select_related("tenant", "agent").get(
        tenant=tenant, run_id=run["run_id"]), operator


def replay_once(run: Any, operator: Any, options: Any) -> tuple[float, Any]:
    from operations.models import Replay
    from operations.replay import execute_replay, start_replay

    replay = start_replay(run, by=operator)  # queued; on_commit sends to no worker (eager off)
    replay.refresh_from_db()
    started = time.perf_counter()
    execute_replay(replay.pk, replay.task_id, options)
    elapsed = time.perf_counter() - started
    return elapsed, Replay.objects.get(pk=replay.pk)


def set_concurrency(tenant: Any, bound: int) -> None:
    from runs.models import Tool

    Tool.objects.filter(tenant=tenant, name__in=list(DRY_RUN_TOOLS)).update(
        dry_run_concurrency=bound)


def describe(name: str, samples: list[float], replay: Any) -> list[Any]:
    from operations.models import ReplayStep

    steps = replay.steps_total
    modes = dict.fromkeys(("dry_run", "stub"), 0)
    for mode in ReplayStep.objects.filter(replay=replay).values_list("mode_used", flat=True):
        modes[mode] = modes.get(mode, 0) + 1
    median = statistics.median(samples)
    return [name, f"{replay.status} {replay.steps_done}/{steps}",
            f"{modes['dry_run']} dry-run / {modes['stub']} stub", replay.divergent_steps,
            len(samples), f"{median:.2f}", f"{min(samples):.2f}",
            f"{1000 * median / max(steps, 1):.2f}"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=1000)
    parser.add_argument("--tool-latency-ms", default="0,20,100",
                        help="the dry-run tool's answer time, one phase each "
                        "(default %(default)s)")
    parser.add_argument("--concurrency", type=int, default=8,
                        help="dry_run_concurrency the bench's dry-run tools declare "
                        "(default %(default)s)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-repeat", type=int, default=1,
                        help="replays per baseline (the sequential one at 100 ms takes ~35 s)")
    add_db_arguments(parser, "replay")
    args = parser.parse_args(argv)
    latencies = [float(x) for x in args.tool_latency_ms.split(",") if x.strip()]
    if not latencies or any(not 0 <= x <= 1000 for x in latencies):
        parser.error("--tool-latency-ms: a comma-separated list of 0 to 1000")
    if not 1 <= args.concurrency <= 16:
        parser.error("--concurrency: 1 to 16 (Tool.dry_run_concurrency)")

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DryRunTool)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    with bench_database(args) as db:
        from unittest import mock

        from operations.replay import WalkOptions

        print(environment_line(db))
        print(f"load average at the start: {load_average()}")
        tenant, run, operator = prepare(args.tool_calls, url)
        # Nothing is queued: the walk is timed in this process, as a worker would run it.
        with mock.patch("operations.tasks.run_replay.apply_async"):
            set_concurrency(tenant, args.concurrency)
            replay_once(run, operator, WalkOptions())  # warm-up: imports, connections
            for latency in latencies:
                DryRunTool.latency_s = latency / 1000
                phase(args, tenant, run, operator, latency)
    httpd.shutdown()


def phase(args: argparse.Namespace, tenant: Any, run: Any, operator: Any,
          latency: float) -> None:
    """One tool latency: the replay with the tools' bound, then the baselines."""
    from operations.replay import WalkOptions

    concurrent = f"sandbox replay, dry_run_concurrency {args.concurrency}"
    sequential = "baseline: the same, dry_run_concurrency 1"
    bare = "baseline: concurrency 1, policy and comparison off"
    cases: list[tuple[str, int, Any, int]] = [
        (concurrent, args.concurrency, WalkOptions(), args.repeat),
        (sequential, 1, WalkOptions(), args.baseline_repeat)]
    if latency == 0:
        cases.append((bare, 1, WalkOptions(policy=False, compare=False),
                      args.baseline_repeat))
    print(f"\n-- tool latency {latency:g} ms (load average {load_average()})")
    results: dict[str, list[float]] = {}
    rows = []
    for name, bound, options, repeat in cases:
        set_concurrency(tenant, bound)
        last = None
        for _ in range(max(repeat, 1)):
            elapsed, last = replay_once(run, operator, options)
            results.setdefault(name, []).append(elapsed)
        rows.append(describe(name, results[name], last))
    set_concurrency(tenant, args.concurrency)
    print(table(["case", "status", "steps", "divergent", "runs", "median s", "min s",
                 "ms / step"], rows))
    full = statistics.median(results[concurrent])
    base = statistics.median(results[sequential])
    target = INSTANT_TARGET_S if latency == 0 else TARGET_S
    record_figure(
        "replay", f"sandbox replay of {args.tool_calls} tool calls, {latency:g} ms dry-run "
        f"tool, dry_run_concurrency {args.concurrency}", f"{full:.2f} s (median of "
        f"{len(results[concurrent])})", f"< {target:g} s",
        f"dry_run_concurrency 1: {base:.2f} s", f"{base / full:.1f}x", full < target)
    if bare in results:
        cost = 1000 * (base - statistics.median(results[bare])) / args.tool_calls
        print(f"policy + comparison cost {cost:.2f} ms per step on top of the bare walk")
    print(f"load average at the end of the phase: {load_average()}")


if __name__ == "__main__":
    main()
