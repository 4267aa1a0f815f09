"""``ledger retention`` and ``ledger hold``: how long a tenant keeps its records, and holds."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from core.actors import Actor
from core.cli_support import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE


def _tenant(user: Actor, slug: str) -> Any:
    from core.models import Tenant
    from core.roles import Role

    return Tenant.objects.for_user(user, Role.MANAGE_POLICIES).filter(slug=slug).first()


def cmd_retention(args: argparse.Namespace, user: Actor) -> int:
    from .retention import apply_retention

    tenant = _tenant(user, args.tenant)
    if tenant is None:
        print(f"ledger: you may not manage retention of tenant {args.tenant!r}", file=sys.stderr)
        return EXIT_FORBIDDEN
    report = apply_retention(tenant, dry_run=args.dry_run)
    print(("(dry run) " if args.dry_run else "") + report.summary())
    for number in report.removal_records:
        print(f"  signed removal record #{number}")
    return EXIT_OK


def cmd_hold(args: argparse.Namespace, user: Actor) -> int:
    from .models import LegalHold
    from .retention import place_legal_hold, release_legal_hold

    tenant = _tenant(user, args.tenant)
    if tenant is None:
        print(f"ledger: you may not place holds in tenant {args.tenant!r}", file=sys.stderr)
        return EXIT_FORBIDDEN
    if args.release is not None:
        hold = LegalHold.objects.filter(tenant=tenant, pk=args.release).first()
        if hold is None:
            print(f"ledger: no legal hold #{args.release} in {tenant.slug}", file=sys.stderr)
            return EXIT_NOT_FOUND
        release_legal_hold(hold, by=user)
        print(f"legal hold #{hold.pk} released")
        return EXIT_OK
    if not args.reason:
        print("ledger: say why with --reason (the matter or ticket)", file=sys.stderr)
        return EXIT_USAGE
    hold = place_legal_hold(tenant, by=user, reason=args.reason, run_id=args.run_id or "")
    print(f"legal hold #{hold.pk} placed on {hold.run_id or 'every run'} of {tenant.slug}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    retention = sub.add_parser("retention", help="remove closed runs past the tenant's "
                               "retention period (what the hourly task does)")
    retention.add_argument("--tenant", required=True)
    retention.add_argument("--dry-run", action="store_true",
                           help="only say what is due and what holds it")
    retention.set_defaults(func=cmd_retention)

    hold = sub.add_parser("hold", help="place (or --release) a legal hold")
    hold.add_argument("--tenant", required=True)
    hold.add_argument("--run-id", help="one run; without it, every run of the tenant")
    hold.add_argument("--reason", help="the matter or ticket the hold is for")
    hold.add_argument("--release", type=int, metavar="HOLD_ID", help="release this hold")
    hold.set_defaults(func=cmd_hold)
