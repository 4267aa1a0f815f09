"""``ledger annotate``: record a manual intervention on a run as a ledger annotation."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from core.actors import Actor
from core.cli_support import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    exactly_one,
    print_json,
)

# ``runs.services.MANUAL_ANNOTATION_KINDS``, spelled out: the parser is built before Django is
# set up (a test keeps the two in step).
KINDS = ("note", "correction", "manual_override", "manual_policy_change", "manual_approval")
# The runbook's words for the last three (``runs.services.MANUAL_KIND_WORDS``).
KIND_WORDS = ("override", "policy_change", "approval")


def cmd_annotate(args: argparse.Namespace, user: Actor) -> int:
    from core.roles import Role

    from .commitments import committer_for
    from .models import Run
    from .services import annotate_run

    try:
        data = orjson.loads(args.data) if args.data else None
    except orjson.JSONDecodeError as exc:
        print(f"ledger: --data is not JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runs = Run.objects.for_user(user, Role.VIEW_LEDGER).filter(run_id=args.run_id)
    if args.tenant:
        runs = runs.filter(tenant__slug=args.tenant)
    run, code = exactly_one(runs.select_related("tenant"), f"run {args.run_id!r}")
    if run is None:
        return code
    try:
        note = annotate_run(run, by=user, body=args.body, kind=args.kind, data=data,
                            target_call_id=args.call_id or "")
    except Run.DoesNotExist:
        print(f"ledger: run {args.run_id!r} is no longer in the ledger", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        committer = committer_for(run.tenant_id)
        print_json({"annotation_id": note.annotation_id, "run_id": run.run_id,
                     "tenant": run.tenant.slug, "seq": note.seq,
                     "annotation_kind": note.annotation_kind, "author_label": note.author_label,
                     "recorded_at": note.recorded_at,
                     # The author's own words, but the link also commits to every record
                     # before it, redacted ones included: a commitment, not the hash.
                     "commitment": {"key": committer.key_id,
                                    "chain": committer.of_hash("chain_hash",
                                                               note.chain_hash)}})
    else:
        print(f"{note.annotation_kind} {note.annotation_id} recorded on {run.run_id} in "
              f"{run.tenant.slug} (seq {note.seq}) by {note.author_label}")
    return EXIT_OK


def add_commands(sub: Any) -> None:
    annotate = sub.add_parser("annotate", help="record a manual intervention (policy change, "
                              "approval, override...) on a run, in its hash chain")
    annotate.add_argument("run_id")
    annotate.add_argument("--tenant", help="the run's tenant (needed if several have it)")
    annotate.add_argument("--body", required=True, help="what was done, and why")
    annotate.add_argument("--kind", choices=KINDS + KIND_WORDS,
                          default="note")
    annotate.add_argument("--data", help='structured details as a JSON object, e.g. '
                          '\'{"ticket": "PD-12"}\'')
    annotate.add_argument("--call-id", help="a tool call of the run it is about")
    annotate.add_argument("--json", action="store_true", help="machine-readable output")
    annotate.set_defaults(func=cmd_annotate)
