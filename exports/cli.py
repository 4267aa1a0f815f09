"""``ledger export`` (produce an export in this process and save the bundle) and
``ledger verify-export`` (offline: no Django, no database)."""

from __future__ import annotations

import argparse
import shutil
import sys
from datetime import datetime
from typing import Any

from core.actors import Actor
from core.cli_support import EXIT_INCOMPLETE, EXIT_NOT_FOUND, EXIT_OK, processes_argument


def _timestamp(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone (e.g. Z or +02:00)")
    return moment


def cmd_export(args: argparse.Namespace, user: Actor) -> int:
    from core.models import Tenant

    from .services import produce_now, request_export
    from .storage import export_storage

    tenant = Tenant.objects.filter(slug=args.tenant).first()
    if tenant is None:
        print(f"ledger: no tenant {args.tenant!r}", file=sys.stderr)
        return EXIT_NOT_FOUND
    export = request_export(tenant, args.window_from, args.window_to, by=user,
                            redaction_level=args.redaction_level, fmt=args.format,
                            justification=args.justification or "", enqueue=False)
    export = produce_now(export, workers=None if args.workers == "auto" else args.workers)
    if export.status != "done":
        print(f"ledger: export {export.pk} {export.status}: {export.error}", file=sys.stderr)
        return EXIT_INCOMPLETE
    target = args.output or export.download_name
    with export_storage().open(export.file, "rb") as source, open(target, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(export.counts.items()))
    print(f"export {export.pk} of {tenant.slug} ({export.redaction_level}): "
          f"{export.rows_done} records ({counts or 'none'}), sha256 {export.sha256} -> {target}")
    return EXIT_OK


def cmd_verify_export(args: argparse.Namespace) -> int:
    from .verify import run

    return run(args)


def add_commands(sub: Any) -> None:
    export = sub.add_parser("export", help="export a tenant's records of a time window "
                            "(redacted, signed bundle)")
    export.add_argument("--tenant", required=True)
    export.add_argument("--from", dest="window_from", required=True, type=_timestamp,
                        help="start of the window (ISO 8601, inclusive)")
    export.add_argument("--to", dest="window_to", required=True, type=_timestamp,
                        help="end of the window (ISO 8601, exclusive)")
    export.add_argument("--redaction-level", choices=["strict", "standard", "none"],
                        default="strict")
    export.add_argument("--format", choices=["jsonl", "json"], default="jsonl")
    export.add_argument("--justification", help="why (required for --redaction-level none)")
    export.add_argument("--workers", type=processes_argument, default="auto",
                        help="processes writing the parts at once (PostgreSQL), or auto (the "
                        "default): one below about 100,000 records, then more, at most the "
                        "parts, the cores and 4")
    export.add_argument("-o", "--output", help="where to save the bundle (default "
                        "ledger-export-<id>.tar)")
    export.set_defaults(func=cmd_export)

    from .verify import add_arguments

    verify = sub.add_parser("verify-export", help="check an export bundle offline "
                            "(checksums, record chain, signature)")
    add_arguments(verify)
    verify.set_defaults(func=cmd_verify_export, standalone=True)
