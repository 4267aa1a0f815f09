"""Sandbox replay of a run with 1,000 tool calls: wall time and per-step overhead.

    .venv/bin/python -m bench.replay [--tool-calls 1000] [--repeat 3] [--keep]

Target: the whole sandbox replay (fresh policy decision per call, recorded; dry-runs over
HTTP on loopback for some tools, recorded outputs as stubs for the rest; comparison with the
recorded outputs; a ReplayStep per call, committed with its decision and the progress in groups
of ``operations.replay.SANDBOX_GROUP_STEPS``) in under 10 s of wall time.

The run is ``bench.run_detail.big_run`` (1,000 tool calls over 50 plan steps, support-triage's
tools). ``get_customer`` and ``update_ticket`` get an HTTP connector with a dry-run (header
and flag) served by a ``ThreadingHTTPServer`` on 127.0.0.1 that answers the arguments it got;
the other tools have no connector, so their recorded output stands in. A published policy of
5 rules decides every call. Each measured replay is walked in this process by the same
``execute_replay`` a worker runs (no broker in the timing).

Baseline in the same run: the same walk with policy and comparison turned off
(``WalkOptions(policy=False, compare=False)``, a flag of the service that exists for this
benchmark only): what the walk, the dry-run HTTP calls and the step rows cost without them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench._common import add_db_arguments, bench_database, environment_line, table, verdict

TARGET_S = 10.0
DRY_RUN_TOOLS = {"get_customer": ("header", "X-Dry-Run"), "update_ticket": ("flag", "dry_run")}


class DryRunTool(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection for the whole replay
    disable_nagle_algorithm = True  # headers and body go out at once (no 40 ms ACK wait)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tool-calls", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    add_db_arguments(parser, "replay")
    args = parser.parse_args(argv)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), DryRunTool)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    with bench_database(args) as db:
        from unittest import mock

        from operations.models import ReplayStep
        from operations.replay import WalkOptions

        print(environment_line(db))
        _tenant, run, operator = prepare(args.tool_calls, url)
        cases = {"sandbox replay (policy + comparison)": WalkOptions(),
                 "baseline: same walk, policy and comparison off":
                     WalkOptions(policy=False, compare=False)}
        results: dict[str, list[float]] = {name: [] for name in cases}
        last: dict[str, Any] = {}
        # Nothing is queued: the walk is timed in this process, as a worker would run it.
        with mock.patch("operations.tasks.run_replay.apply_async"):
            replay_once(run, operator, WalkOptions())  # warm-up: imports, connections
            for _ in range(args.repeat):
                for name, options in cases.items():
                    elapsed, last[name] = replay_once(run, operator, options)
                    results[name].append(elapsed)
        rows = []
        for name, samples in results.items():
            replay = last[name]
            steps = replay.steps_total
            modes = dict.fromkeys(("dry_run", "stub"), 0)
            for mode in ReplayStep.objects.filter(replay=replay).values_list("mode_used",
                                                                            flat=True):
                modes[mode] = modes.get(mode, 0) + 1
            median = statistics.median(samples)
            rows.append([name, f"{replay.status} {replay.steps_done}/{steps}",
                         f"{modes['dry_run']} dry-run / {modes['stub']} stub",
                         replay.divergent_steps, f"{median:.2f}", f"{min(samples):.2f}",
                         f"{1000 * median / max(steps, 1):.2f}"])
        print(table(["case", "status", "steps", "divergent", "median s", "min s",
                     "ms / step"], rows))
        full = statistics.median(results["sandbox replay (policy + comparison)"])
        base = statistics.median(results["baseline: same walk, policy and comparison off"])
        print(f"policy + comparison cost {1000 * (full - base) / args.tool_calls:.2f} ms per "
              f"step on top of the baseline walk")
        print(f"target: sandbox replay of {args.tool_calls} tool calls under {TARGET_S:.0f} s:"
              f" {verdict(full < TARGET_S)}")
    httpd.shutdown()


if __name__ == "__main__":
    main()
