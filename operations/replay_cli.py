"""``ledger replay``: replay a recorded run (sandbox by default) and compare its outputs.

Exit codes: 0 the replay succeeded with no divergence (or waits for approval), 1 no such run or
replay, 2 bad usage, 3 refused (role, outage mode, policy), 4 it diverged, failed or was
rejected. ``--follow-up REPLAY_ID:SEQ --state S`` records what is done about a divergence (0, 1,
2 when the step is not flagged or the state needs a note, 3 without the operate role);
``--divergences`` lists them.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from core.actors import Actor
from core.cli_support import (
    EXIT_INCOMPLETE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TAMPERED,
    EXIT_USAGE,
    exactly_one,
    print_json,
)


def _pinned_version(tenant: Any, spec: str | None) -> Any:
    """``NAME:N`` (policy name and version number) or a version id."""
    from policies.models import PolicyVersion

    if not spec:
        return None
    versions = PolicyVersion.objects.filter(tenant=tenant).select_related("policy")
    name, _, number = spec.rpartition(":")
    if name and number.isdigit():
        return versions.filter(policy__name=name, number=int(number)).first()
    return versions.filter(pk=int(spec)).first() if spec.isdigit() else None


def _print_report(replay: Any, report: dict[str, Any]) -> None:
    print(f"replay {replay.pk} of {replay.run.run_id} ({replay.mode}): {replay.status}, "
          f"{replay.steps_done}/{replay.steps_total} steps, {replay.divergent_steps} divergent"
          + (f": {replay.failure_reason}" if replay.failure_reason else ""))
    for step in report["divergent_steps"]:
        why = f": {step['error']}" if step["error"] else ""
        print(f"  DIVERGED step {step['seq']} {step['tool']} ({step['call_id']}, "
              f"{step['mode_used']}, {step['status']}){why}")
        for d in step["differences"]:
            print(f"    {d['path']} {d['change']}: - {d['recorded']!r}  + {d['replayed']!r}")


def _outcome(replay: Any, waited: bool = False) -> int:
    """4 when a step diverged; 5 when the replay failed, was rejected, or (``waited``) was
    still queued or running when the wait ended; else 0 (waiting for an approver is 0: the
    command said so, and the replay resumes on its own)."""
    if replay.divergent_steps:
        return EXIT_TAMPERED
    if replay.status in ("failed", "rejected") or (
            waited and replay.status in ("queued", "running")):
        return EXIT_INCOMPLETE
    return EXIT_OK


def _follow(replay: Any, args: argparse.Namespace) -> Any:
    """Show progress until the replay ends, waits for a person, or --timeout passes."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from core.workers import stuck_message

    from .models import ReplayStatus

    deadline = time.monotonic() + args.timeout
    with Progress(TextColumn(f"replay {replay.pk}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.description}"), console=Console(stderr=True),
                  transient=True, disable=args.quiet) as bar:
        task = bar.add_task(replay.status, total=None)
        while True:
            replay.refresh_from_db()
            bar.update(task, completed=replay.steps_done, total=replay.steps_total or None,
                       description=replay.status)
            if replay.is_finished or replay.status == ReplayStatus.WAITING_APPROVAL:
                return replay
            if time.monotonic() > deadline:
                stuck = stuck_message(replay.created_at) if replay.status == "queued" else ""
                print(f"ledger: replay {replay.pk} is still {replay.status} after "
                      f"{args.timeout:g} s; follow it with ledger replay --show {replay.pk}"
                      + (f" ({stuck})" if stuck else ""), file=sys.stderr)
                return replay
            time.sleep(0.5)


def cmd_replay(args: argparse.Namespace, user: Actor) -> int:

    from core.roles import Role
    from runs.models import Run

    from .models import Replay, ReplayStatus
    from .replay import execute_replay, start_replay

    if args.follow_up:
        return _follow_up(args, user)
    if args.divergences:
        return _list_divergences(args, user)
    if args.show:
        replay = Replay.objects.for_user(user, Role.VIEW_LEDGER).filter(pk=args.show).first()
        if replay is None:
            print(f"ledger: no replay {args.show} in your tenants", file=sys.stderr)
            return EXIT_NOT_FOUND
        return _report(replay, args, user)
    if not args.run_id:
        print("ledger: replay needs --run-id (or --show REPLAY_ID)", file=sys.stderr)
        return EXIT_USAGE
    runs = Run.objects.for_user(user, Role.OPERATE).filter(run_id=args.run_id)
    if args.tenant:
        runs = runs.filter(tenant__slug=args.tenant)
    run, code = exactly_one(runs.select_related("tenant", "agent"), f"run {args.run_id!r}",
                            where="the tenants you may operate on")
    if run is None:
        return code
    version = _pinned_version(run.tenant, args.policy_version)
    if args.policy_version and version is None:
        print(f"ledger: no policy version {args.policy_version!r} in {run.tenant.slug} "
              "(use NAME:NUMBER or an id)", file=sys.stderr)
        return EXIT_NOT_FOUND
    replay = start_replay(run, by=user, mode="live" if args.live else "sandbox",
                          until_step=args.until_step, policy_version=version)
    print(f"replay {replay.pk} of {run.run_id} in {run.tenant.slug}: {replay.mode}, "
          f"{replay.get_status_display()}", file=sys.stderr)
    if args.inline:  # this process walks it: no worker needed (embedded default)
        execute_replay(replay.pk, replay.task_id)
        replay.refresh_from_db()
    elif not args.no_wait:
        replay = _follow(replay, args)
    if replay.status == ReplayStatus.WAITING_APPROVAL:
        print(f"replay {replay.pk} waits for approval request {replay.approval_id} (an "
              "approver decides in /approvals/); it resumes on approval. Follow it with "
              f"ledger replay --show {replay.pk}")
    return _report(replay, args, user, waited=not (args.inline or args.no_wait))


def _report(replay: Any, args: argparse.Namespace, user: Actor, waited: bool = False) -> int:
    from runs.services import redactor_for

    from .replay_present import redacted_divergence_report

    view = redactor_for(user, replay.tenant_id, args.redaction_level,
                        viewing=f"replay {replay.pk} (ledger replay --show)")
    report = redacted_divergence_report(replay, view)
    if args.json:
        print_json(report)
    else:
        _print_report(replay, report)
    return _outcome(replay, waited)


def _follow_up(args: argparse.Namespace, user: Actor) -> int:
    """``--follow-up REPLAY_ID:SEQ --state S [--note TEXT]``: what is done about a divergence."""

    from core.roles import Role

    from .divergences import set_divergence_follow_up
    from .models import ReplayStep

    replay_id, _, seq = args.follow_up.partition(":")
    if not (replay_id.isdigit() and seq.isdigit()) or not args.state:
        print("ledger: --follow-up REPLAY_ID:SEQ needs --state (queued_for_fuzzing, "
              "expected, fixed or open)", file=sys.stderr)
        return EXIT_USAGE
    step = ReplayStep.objects.for_user(user, Role.VIEW_LEDGER).filter(
        replay_id=int(replay_id), seq=int(seq)).first()
    if step is None:
        print(f"ledger: no step {seq} of replay {replay_id} in your tenants", file=sys.stderr)
        return EXIT_NOT_FOUND
    step = set_divergence_follow_up(step, by=user, state=args.state, note=args.note or "")
    print(f"replay {step.replay_id} step {step.seq} ({step.call_id}): {step.follow_up}"
          + (f" ({step.follow_up_note})" if step.follow_up_note else ""))
    return EXIT_OK


def _list_divergences(args: argparse.Namespace, user: Actor) -> int:
    """``--divergences [--state S|all] [--tenant T] [--tool NAME] [--json]``."""
    from .divergences import divergences_for
    from .models import FollowUp
    from .replay_present import divergence_rows

    state = args.state or FollowUp.OPEN
    if state != "all" and state not in FollowUp.values:
        print(f"ledger: no follow-up state {state!r}", file=sys.stderr)
        return EXIT_USAGE
    steps = divergences_for(user, state=None if state == "all" else state,
                            tenant=args.tenant, tool=args.tool)
    rows = divergence_rows(steps[:args.limit], user)
    if args.json:
        print_json(rows)
        return EXIT_OK
    for row in rows:
        print(f"{row['tenant']} replay {row['replay']} step {row['seq']} {row['tool']} "
              f"({row['call_id']}, run {row['run_id']}): {row['follow_up']['state']}")
        for d in row["differences"]:
            print(f"    {d['path']} {d['change']}: - {d['recorded']!r}  + {d['replayed']!r}")
    if not rows:
        print(f"no {'' if state == 'all' else state + ' '}divergences", file=sys.stderr)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    replay = sub.add_parser("replay", help="replay a recorded run (sandbox by default) and "
                            "compare its tool outputs with the recorded ones")
    replay.add_argument("--run-id")
    replay.add_argument("--tenant")
    mode = replay.add_mutually_exclusive_group()
    mode.add_argument("--sandbox", action="store_true", default=True,
                      help="dry-runs and recorded outputs only (the default)")
    mode.add_argument("--live", action="store_true",
                      help="call the tools for real (needs an approval; original "
                      "idempotency keys)")
    replay.add_argument("--until-step", type=int, help="the last plan step to replay")
    replay.add_argument("--policy-version", help="pin a policy version: NAME:NUMBER or its id")
    replay.add_argument("--inline", action="store_true",
                        help="walk the replay in this process instead of a worker")
    replay.add_argument("--no-wait", action="store_true", help="start it and return")
    replay.add_argument("--timeout", type=float, default=600,
                        help="how long to follow it (seconds, default %(default)s)")
    replay.add_argument("--show", type=int, metavar="REPLAY_ID",
                        help="print an existing replay and its divergences")
    replay.add_argument("--json", action="store_true", help="the divergence report as JSON")
    replay.add_argument("--quiet", action="store_true", help="no progress bar")
    replay.add_argument("--redaction-level", choices=["strict", "standard", "none"],
                        default="strict")
    replay.add_argument("--follow-up", metavar="REPLAY_ID:SEQ",
                        help="record what is done about a divergent step (operate role)")
    replay.add_argument("--state", help="with --follow-up: queued_for_fuzzing, expected, "
                        "fixed or open; with --divergences: the state listed (default open, "
                        "or all)")
    replay.add_argument("--note", help="with --follow-up: why (required for expected)")
    replay.add_argument("--divergences", action="store_true",
                        help="list divergences of your tenants' replays (--tenant, --tool, "
                        "--state)")
    replay.add_argument("--tool", help="with --divergences: only this tool's")
    replay.add_argument("--limit", type=int, default=100,
                        help="with --divergences: at most this many, newest first")
    replay.set_defaults(func=cmd_replay)
