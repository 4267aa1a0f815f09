"""``ledger rollback``: compensate a completed tool call (or a whole run's) from a terminal."""

from __future__ import annotations

import argparse
import time
from typing import Any

from core.actors import Actor
from core.cli_support import (
    EXIT_INCOMPLETE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    exactly_one,
    fail,
)

WAIT_POLL_SECONDS = 0.5


def cmd_rollback(args: argparse.Namespace, user: Actor) -> int:
    from core.roles import Role
    from runs.models import Run, ToolCall

    from .models import Rollback
    from .rollback import find_incident, request_rollback, request_run_rollback

    if bool(args.call_id) == bool(args.run_id):
        return fail("name one tool call (--call-id) or one whole run (--run-id)", EXIT_USAGE)
    incident = None
    if args.incident is not None:
        incident = find_incident(args.incident, by=user)
        if incident is None:
            return fail(f"no incident {args.incident} in your tenants", EXIT_NOT_FOUND)
    model, lookup = (Run, {"run_id": args.run_id}) if args.run_id else (
        ToolCall, {"call_id": args.call_id})
    scoped = model.objects.for_user(user, Role.VIEW_LEDGER).filter(**lookup)
    if args.tenant:
        scoped = scoped.filter(tenant__slug=args.tenant)
    target, code = exactly_one(scoped, f"run {args.run_id!r}" if args.run_id
                        else f"tool call {args.call_id!r}")
    if target is None:
        return code
    if args.run_id:
        rollbacks = request_run_rollback(target, by=user, incident=incident)
    else:
        rollback, queued = request_rollback(target, by=user, incident=incident)
        rollbacks = [rollback]
        if not queued:
            print(f"{target.call_id} was already rolled back: rollback {rollback.pk}")
    ids = [r.pk for r in rollbacks]
    deadline = time.monotonic() + max(args.wait, 0)
    while args.wait and time.monotonic() < deadline and Rollback.objects.filter(
            pk__in=ids, status__in=["queued", "running"]).exists():
        time.sleep(WAIT_POLL_SECONDS)
    unfinished = False  # failed, partial, or still going when --wait ended: exit 5
    for row in Rollback.objects.filter(pk__in=ids).select_related("tool_call__tool").order_by(
            "position", "id"):
        line = (f"rollback {row.pk}\t{row.tool_call.call_id}\t{row.tool_call.tool.name}\t"
                f"{row.status}\tattempts {row.attempts}")
        if row.last_error:
            line += f"\t{row.last_error}"
        if row.remaining_side_effects:
            line += f"\tremaining: {row.remaining_side_effects}"
        print(line)
        if row.status in ("failed", "partial") or (args.wait and row.status != "succeeded"):
            unfinished = True
    return EXIT_INCOMPLETE if unfinished else EXIT_OK


def add_commands(sub: Any) -> None:
    rollback = sub.add_parser("rollback", help="run the compensate hook of a completed tool "
                              "call, or of every compensable call of a run (latest first)")
    rollback.add_argument("--call-id")
    rollback.add_argument("--run-id", help="roll back the whole run instead of one call")
    rollback.add_argument("--tenant")
    rollback.add_argument("--incident", type=int, help="the incident this is for (its id)")
    rollback.add_argument("--wait", type=float, default=0,
                          help="seconds to wait for the outcome (default: just queue it)")
    rollback.set_defaults(func=cmd_rollback)
