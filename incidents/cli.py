"""``ledger incident open|link|freeze|close|show``: the incident record from a terminal."""

from __future__ import annotations

import argparse
from typing import Any

from core.actors import Actor
from core.cli_support import (
    EXIT_FORBIDDEN,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    fail,
    print_json,
)


def _incident(user: Actor, pk: int) -> Any:
    from core.roles import Role

    from .models import Incident

    return Incident.objects.for_user(user, Role.VIEW_LEDGER).select_related("tenant").filter(
        pk=pk).first()


def cmd_open(args: argparse.Namespace, user: Actor) -> int:
    from core.models import Tenant
    from core.roles import Role

    from .services import open_incident

    tenant = Tenant.objects.for_user(user, Role.OPERATE).filter(slug=args.tenant).first()
    if tenant is None:
        return fail(f"you may not operate on tenant {args.tenant!r}", EXIT_FORBIDDEN)
    incident = open_incident(tenant, args.title, by=user, severity=args.severity,
                             summary=args.summary or "", ticket_ids=args.ticket or [])
    print(f"{incident.reference} opened in {tenant.slug}: {incident.title}")
    return EXIT_OK


def cmd_link(args: argparse.Namespace, user: Actor) -> int:
    from .services import link_to_incident

    incident = _incident(user, args.incident_id)
    if incident is None:
        return fail(f"no incident {args.incident_id} in your tenants", EXIT_NOT_FOUND)
    if not (args.run or args.call or args.policy_version or args.replay or args.ticket):
        return fail("name something to link: --run, --call, --policy-version, --replay or "
                     "--ticket", EXIT_USAGE)
    linked = link_to_incident(incident, by=user, run_ids=args.run or [],
                              call_ids=args.call or [],
                              policy_version_ids=args.policy_version or [],
                              replay_ids=args.replay or [], ticket_ids=args.ticket or [])
    print(f"{incident.reference}: linked {len(linked.runs)} run(s), {len(linked.calls)} "
          f"call(s), {len(linked.policy_versions)} policy version(s), "
          f"{len(linked.replays)} replay(s), {len(linked.tickets)} ticket(s)")
    if linked.escalated_calls:
        print(f"escalated {len(linked.escalated_calls)} write/delete/exfil call(s) to "
              "security and data owners")
    return EXIT_OK


def cmd_freeze(args: argparse.Namespace, user: Actor) -> int:
    from .services import freeze_for_incident

    incident = _incident(user, args.incident_id)
    if incident is None:
        return fail(f"no incident {args.incident_id} in your tenants", EXIT_NOT_FOUND)
    version = freeze_for_incident(incident, args.tool, by=user, mode=args.mode)
    print(f"{args.tool} frozen ({args.mode}) for {incident.reference}: "
          f"{version.policy.name} v{version.number}")
    return EXIT_OK


def cmd_close(args: argparse.Namespace, user: Actor) -> int:
    from .services import close_incident

    incident = _incident(user, args.incident_id)
    if incident is None:
        return fail(f"no incident {args.incident_id} in your tenants", EXIT_NOT_FOUND)
    closed = close_incident(incident, by=user, remediation_status=args.remediation,
                            note=args.note or "")
    print(f"{closed.reference} closed ({closed.remediation_status})")
    return EXIT_OK


def cmd_show(args: argparse.Namespace, user: Actor) -> int:
    from .api.presenters import incident_detail

    incident = _incident(user, args.incident_id)
    if incident is None:
        return fail(f"no incident {args.incident_id} in your tenants", EXIT_NOT_FOUND)
    detail = incident_detail(incident, user)
    if args.json:
        print_json(detail)
        return EXIT_OK
    print(f"{detail['reference']} in {detail['tenant']}: {detail['title']}")
    print(f"severity {detail['severity']} · status {detail['status']} · remediation "
          f"{detail['remediation_status']} · tickets {', '.join(detail['ticket_ids']) or '-'}")
    print(f"runs: {', '.join(detail['runs']) or '-'}")
    print("calls: " + (", ".join(f"{c['call_id']} ({c['tool']}, {c['action_class']})"
                                 for c in detail["tool_calls"]) or "-"))
    print("policy versions: " + (", ".join(
        f"{'freeze ' if v['freeze'] else ''}{v['policy']} v{v['version']}"
        for v in detail["policy_versions"]) or "-"))
    print("rollbacks: " + (", ".join(f"{r['call_id']} {r['status']}"
                                     for r in detail["rollbacks"]) or "-"))
    for entry in detail["timeline"]:
        print(f"  {entry['recorded_at']:%Y-%m-%d %H:%M:%S} {entry['event']:<22} {entry['body']}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    from .choices import CLOSING_REMEDIATIONS, Severity

    incident = sub.add_parser("incident", help="open, link, freeze, close and show incidents")
    verbs = incident.add_subparsers(dest="incident_command", required=True)

    opened = verbs.add_parser("open", help="open an incident")
    opened.add_argument("--tenant", required=True)
    opened.add_argument("--title", required=True)
    opened.add_argument("--severity", choices=Severity.values, default=Severity.MEDIUM)
    opened.add_argument("--summary")
    opened.add_argument("--ticket", action="append", help="external ticket id (repeatable)")
    opened.set_defaults(func=cmd_open)

    link = verbs.add_parser("link", help="link runs, calls, policy versions, tickets")
    link.add_argument("incident_id", type=int)
    link.add_argument("--run", action="append", help="run_id (repeatable)")
    link.add_argument("--call", action="append", help="tool call_id (repeatable)")
    link.add_argument("--policy-version", action="append", type=int,
                      help="policy version id (repeatable)")
    link.add_argument("--replay", action="append", type=int, help="replay id (repeatable)")
    link.add_argument("--ticket", action="append", help="external ticket id (repeatable)")
    link.set_defaults(func=cmd_link)

    freeze = verbs.add_parser("freeze", help="freeze a tool for this incident")
    freeze.add_argument("incident_id", type=int)
    freeze.add_argument("tool")
    freeze.add_argument("--mode", choices=["deny", "sandbox"], default="deny")
    freeze.set_defaults(func=cmd_freeze)

    close = verbs.add_parser("close", help="close with a remediation status")
    close.add_argument("incident_id", type=int)
    close.add_argument("--remediation", required=True,
                       choices=[r.value for r in CLOSING_REMEDIATIONS])
    close.add_argument("--note")
    close.set_defaults(func=cmd_close)

    show = verbs.add_parser("show", help="an incident, its links and its timeline")
    show.add_argument("incident_id", type=int)
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)
