"""``ledger approvals list|show|approve|reject``: the approval queue from a terminal, through
the same queue and the same ``decide_approval`` (four-eyes included) as the page and the API."""

from __future__ import annotations

import argparse
from typing import Any

from core.actors import Actor
from core.cli_support import EXIT_NOT_FOUND, EXIT_OK, fail, print_json


def _shown(requests: list[Any], user: Actor) -> list[dict[str, Any]]:
    from .api.views import QueueEntrySerializer
    from .queue import queue_entries

    entries = {entry.request.pk: entry for entry in queue_entries(requests, user)}
    return list(QueueEntrySerializer(requests, many=True, context={"entries": entries}).data)


def cmd_list(args: argparse.Namespace, user: Actor) -> int:
    from rich.console import Console
    from rich.table import Table

    from .models import Status
    from .queue import RISK, visible_requests

    requests = visible_requests(user, status=None if args.all else Status.PENDING,
                                tenant=args.tenant)
    ordered = requests.annotate(risk=RISK).order_by("risk", "created_at") if not args.all \
        else requests.order_by("-id")
    rows = _shown(list(ordered[: args.limit]), user)
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("Nothing is waiting for a decision in your tenants." if not args.all else
              "No approval requests in your tenants.")
        return EXIT_OK
    table = Table("id", "tenant", "request", "votes", "due (UTC)", "you")
    for column in table.columns:
        column.overflow = "fold"  # wrapped, never cut with an ellipsis
    for column, key in zip(table.columns[:2], ("id", "tenant"), strict=True):
        # ids are copied into the next command: on one line, whatever the terminal's width
        column.no_wrap = True
        column.min_width = max(len(str(row[key])) for row in rows)
    for row in rows:
        kind = "" if row["kind"] == "tool_call" else f"{row['kind']}: "
        table.add_row(str(row["id"]), row["tenant"],
                      f"{kind}{row['tool']} ({row['action_class']}), {row['status']}",
                      f"{row['approvals']}/{row['approvals_needed']}",
                      _short_time(row["due_at"]),
                      "may decide" if row["you_may_decide"] else row["why_not"])
    Console().print(table)
    return EXIT_OK


def _short_time(iso: str | None) -> str:
    from datetime import UTC

    from django.utils.dateparse import parse_datetime

    moment = parse_datetime(iso) if iso else None
    return f"{moment.astimezone(UTC):%m-%d %H:%M}" if moment else "-"


def _one(user: Actor, pk: int) -> Any:
    from .queue import visible_requests

    return visible_requests(user).filter(pk=pk).first()


def cmd_show(args: argparse.Namespace, user: Actor) -> int:
    request = _one(user, args.request_id)
    if request is None:
        return fail(f"no approval request {args.request_id} in your tenants", EXIT_NOT_FOUND)
    row = _shown([request], user)[0]
    if args.json:
        print_json(row)
        return EXIT_OK
    from .queue import what_approving_lifts

    print(f"request {row['id']} in {row['tenant']}: {row['kind']} {row['tool']} "
          f"({row['action_class']}), {row['status']}")
    print(f"asked by {row['requested_by']} at {row['created_at']}; due {row['due_at']}")
    if row["run_id"]:
        print(f"run {row['run_id']}" + (f", call {row['call_id']}" if row["call_id"] else ""))
    print(f"arguments: {row['arguments']}")
    print(f"approvals: {row['approvals']} of {row['approvals_needed']}"
          + (f" (voted: {', '.join(row['voters'])})" if row["voters"] else ""))
    lifts = what_approving_lifts(request)
    if lifts and row["status"] == "pending":
        print(f"CAREFUL: {lifts}")
    print("you may decide it" if row["you_may_decide"] else f"you do not decide it: "
          f"{row['why_not']}")
    return EXIT_OK


def cmd_decide(args: argparse.Namespace, user: Actor) -> int:
    from .services import decide_approval

    request = _one(user, args.request_id)
    if request is None:
        return fail(f"no approval request {args.request_id} in your tenants", EXIT_NOT_FOUND)
    decided = decide_approval(request, by=user, approve=args.approvals_command == "approve",
                              justification=args.justification or "")
    if decided.status == "pending":
        print(f"request {decided.pk}: your approval is recorded; it needs "
              f"{decided.approvals_needed} in all")
    else:
        print(f"request {decided.pk} ({decided.tool}): {decided.status}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    approvals = sub.add_parser("approvals", help="list, show, approve and reject HITL requests")
    verbs = approvals.add_subparsers(dest="approvals_command", required=True)

    listed = verbs.add_parser("list", help="pending requests you may see, riskiest first")
    listed.add_argument("--tenant")
    listed.add_argument("--all", action="store_true", help="decided ones too, newest first")
    listed.add_argument("--limit", type=int, default=50)
    listed.add_argument("--json", action="store_true")
    listed.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="one request: arguments, votes, whether you decide")
    show.add_argument("request_id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    for verb, needs in (("approve", "required for exfil"), ("reject", "required")):
        decide = verbs.add_parser(verb, help=f"{verb} a request (four-eyes: not one you caused)")
        decide.add_argument("request_id", type=int)
        decide.add_argument("--justification", "-j", help=f"why ({needs})")
        decide.set_defaults(func=cmd_decide)
