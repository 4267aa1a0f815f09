"""``ledger reconcile``: the reconciliation queue from a terminal (runs/deferred.py).

``--list`` (the default) shows the pending items, redacted (strict); ``--apply`` maps every
pending item with the current mapping and records what now maps, exactly once; ``--dismiss ID
--justification TEXT`` dismisses one. Applying and dismissing need the operate role.
"""

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


def _list(args: argparse.Namespace, user: Actor) -> int:
    from .api.presenters import renamed, values_of
    from .deferred import deferred_for, shown_item
    from .redaction import as_text
    from .services import ViewersByTenant

    status = None if args.status == "all" else args.status
    items = deferred_for(user, args.tenant, status, args.source)
    fields = {"id": "id", "tenant": "tenant__slug", "tenant_id": "tenant_id",
              "source": "source", "reason_code": "reason_code", "reason": "reason",
              "run_id": "run_id", "status": "status", "received_at": "received_at",
              "justification": "justification", "applied_records": "applied_records"}
    if args.json:
        fields["payload"] = "payload"
    viewers = ViewersByTenant(user)  # strict
    rows = [shown_item(viewers, row) for row in renamed(values_of(items, fields)[:args.limit])]
    for row in rows:
        del row["tenant_id"]
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("no deferred item" + (f" ({status})" if status else "") + " in your tenants")
    for row in rows:
        print(f"{row['id']}\t{row['tenant']}\t{row['status']}\t{row['source']}\t"
              f"{row['reason_code']}\t{row['run_id'] or '-'}\t{as_text(row['reason'])}")
    return EXIT_OK


def _apply(args: argparse.Namespace, user: Actor) -> int:
    from core.roles import Role
    from core.tenancy import has_role

    from .deferred import reconcile

    if not has_role(user, Role.OPERATE):
        return fail("applying deferred items needs the operate role", EXIT_FORBIDDEN)
    outcomes = reconcile(user, args.tenant, limit=args.limit)
    if args.json:
        print_json([{"item_id": o.item_id, "outcome": o.outcome, "detail": o.detail,
                     "records": o.records} for o in outcomes])
        return EXIT_OK
    counted: dict[str, int] = {}
    for o in outcomes:
        counted[o.outcome] = counted.get(o.outcome, 0) + 1
        made = ", ".join(f"{r['kind']} {r['id']}" for r in o.records)
        print(f"{o.item_id}\t{o.outcome}\t{made or o.detail}")
    print(f"applied {counted.get('applied', 0)}, still deferred "
          f"{counted.get('still_deferred', 0)}, taken by another run {counted.get('taken', 0)}")
    return EXIT_OK


def _dismiss(args: argparse.Namespace, user: Actor) -> int:
    from django.core.exceptions import PermissionDenied, ValidationError

    from .deferred import dismiss_deferred, items_by_pk

    item = items_by_pk(user, [args.dismiss]).first()
    if item is None:
        return fail(f"no deferred item {args.dismiss} in your tenants", EXIT_NOT_FOUND)
    try:
        dismiss_deferred(item, by=user, justification=args.justification or "")
    except PermissionDenied as exc:
        return fail(str(exc), EXIT_FORBIDDEN)
    except ValidationError as exc:
        return fail(" ".join(exc.messages), EXIT_USAGE)
    print(f"deferred item {item.pk} dismissed")
    return EXIT_OK


def cmd_reconcile(args: argparse.Namespace, user: Actor) -> int:
    if args.dismiss is not None:
        return _dismiss(args, user)
    if args.apply:
        return _apply(args, user)
    return _list(args, user)


def add_commands(sub: Any) -> None:
    reconcile = sub.add_parser(
        "reconcile", help="the reconciliation queue: list deferred items (what the portal "
        "received and could not place), apply the current mapping to them, or dismiss one")
    reconcile.add_argument("--tenant", help="one of your tenants (by slug)")
    what = reconcile.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list the items (the default)")
    what.add_argument("--apply", action="store_true",
                      help="record what now maps, exactly once (operate role)")
    what.add_argument("--dismiss", type=int, metavar="ID",
                      help="dismiss one item; needs --justification (operate role)")
    reconcile.add_argument("--justification", "-j", help="why the item is dismissed")
    reconcile.add_argument("--status", default="pending",
                           choices=["pending", "applied", "dismissed", "all"],
                           help="which items --list shows (default: pending)")
    reconcile.add_argument("--source", choices=["batch", "otlp_span", "otlp_trace_gap",
                                                "chain_gap"])
    reconcile.add_argument("--limit", type=int, default=200)
    reconcile.add_argument("--json", action="store_true", help="machine-readable output "
                           "(with each item's redacted payload)")
    reconcile.set_defaults(func=cmd_reconcile)
