"""``ledger commitment-key``: hand a tenant's commitment key to an auditor, or rotate it."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from core.actors import Actor
from core.cli_support import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_OK


def cmd_commitment_key(args: argparse.Namespace, user: Actor) -> int:
    from core.models import Tenant
    from core.roles import Role

    from .commitments import disclose_commitment_key, rotate_commitment_key
    from .models import CommitmentKey

    role = Role.MANAGE_POLICIES if args.rotate else Role.VIEW_UNREDACTED
    tenant = Tenant.objects.for_user(user, role).filter(slug=args.tenant).first()
    if tenant is None:
        print(f"ledger: {'rotating' if args.rotate else 'reading'} the commitment key of "
              f"{args.tenant!r} needs the {role} role there", file=sys.stderr)
        return EXIT_FORBIDDEN
    if args.rotate:
        key = rotate_commitment_key(tenant, by=user)
        print(f"commitment key of {tenant.slug} rotated: {key.key_id} is current; redacted "
              "outputs commit under it from now on")
        return EXIT_OK
    try:
        key = disclose_commitment_key(tenant, by=user, generation=args.generation)
    except CommitmentKey.DoesNotExist:
        print(f"ledger: {tenant.slug} has no commitment key of generation {args.generation}",
              file=sys.stderr)
        return EXIT_NOT_FOUND
    line = f"{key.key_id} {bytes(key.secret).hex()}\n"
    if args.output:
        descriptor = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(line)
        print(f"commitment key {key.key_id} of {tenant.slug} written to {args.output} "
              "(recorded in the governance log)", file=sys.stderr)
    else:
        sys.stdout.write(line)
    return EXIT_OK


def add_commands(sub: Any) -> None:
    key = sub.add_parser("commitment-key", help="give out (view_unredacted, recorded) or "
                         "--rotate (manage_policies) the key redacted outputs commit under")
    key.add_argument("--tenant", required=True)
    key.add_argument("--generation", type=int, help="an older, retired key (default: current)")
    key.add_argument("--rotate", action="store_true", help="retire the current key, make "
                     "the next")
    key.add_argument("-o", "--output", help="write the key to this file (mode 600) instead "
                     "of standard output")
    key.set_defaults(func=cmd_commitment_key)
