"""The ``ledger`` command: the runbook's steps from a terminal on a portal host.

It talks to the portal's database through Django, acting as one portal user and seeing
exactly that user's tenants: the user of the personal access token in ``LEDGER_TOKEN`` (or
``--token-file``), narrowed to its scopes; or, in local mode on the portal host, ``--local
--as USER``. Every record it writes names the token or the local mode.

Exit codes: 0 done (and, for verify, intact), 1 not found, 2 bad usage, 3 not allowed (e.g. a
redaction level without its role), 4 verify found tampering.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from core.cli_support import (
    EXIT_FORBIDDEN,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_TAMPERED,
    EXIT_USAGE,
    exactly_one,
    fail,
    print_json,
    processes_argument,
)

if TYPE_CHECKING:  # importing it needs Django set up, which main() does first
    from core.actors import Actor

PAYLOAD_FIELDS = ("input", "output", "error", "messages", "response", "body", "data")
# Apps add their own subcommands: each module has ``add_commands(subparsers)``; a command that
# sets ``standalone=True`` runs without Django and is called as ``func(args)``.
COMMAND_MODULES: tuple[str, ...] = (
    "approvals.cli", "exports.cli", "incidents.cli", "runs.annotation_cli", "runs.retention_cli",
    "runs.commitment_cli", "runs.deferred_cli", "operations.replay_cli",
    "operations.rollback_cli", "policies.cli")


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
    import django
    from django.apps import apps

    started_here = not apps.ready
    django.setup()
    if started_here:
        # A command process, as a server one: the collector need not re-walk Django's start-up
        # heap while an export or a verify builds its records (core/heap.py; ~7% of an
        # export's CPU). Not when called in a process that has set Django up already.
        from core.heap import freeze_startup_heap

        freeze_startup_heap()


def _acting_user(args: argparse.Namespace) -> Any:
    """Who the command acts as: the user of the personal access token in ``LEDGER_TOKEN`` (or
    the file ``--token-file``), or, in local mode on the portal host, ``--as USER``."""
    from core.access_tokens import TokenRefused, actor_for_token, actor_in_local_mode

    raw = os.environ.get("LEDGER_TOKEN", "")
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as handle:
                raw = handle.read().strip()
        except OSError as exc:
            raise SystemExit(f"ledger: cannot read the token file: {exc}") from None
    try:
        if raw:
            return actor_for_token(raw)
        if args.local or os.environ.get("LEDGER_CLI_LOCAL") == "1":
            if not args.acting_as:
                raise SystemExit("ledger: local mode acts as --as USER (or LEDGER_USER)")
            return actor_in_local_mode(args.acting_as)
    except TokenRefused as exc:
        raise SystemExit(f"ledger: {exc}") from None
    raise SystemExit("ledger: authenticate with a personal access token (LEDGER_TOKEN or "
                     "--token-file; make one in the portal under Personal access tokens), or, "
                     "in a shell on the portal host, pass --local with --as USER")


def cmd_runs(args: argparse.Namespace, user: Actor) -> int:
    from rich.console import Console
    from rich.table import Table

    from core.roles import Role
    from runs.api.presenters import RUN_FIELDS, renamed, values_of
    from runs.models import Run
    from runs.services import ViewersByTenant

    runs = Run.objects.for_user(user, Role.VIEW_LEDGER)
    if args.tenant:
        runs = runs.filter(tenant__slug=args.tenant)
    if args.agent:
        runs = runs.filter(agent__agent_id=args.agent)
    if args.status:
        runs = runs.filter(status=args.status)
    rows = renamed(values_of(runs.order_by("-id"), RUN_FIELDS, "tenant_id")[: args.limit])
    if args.json:
        viewers = ViewersByTenant(user)  # strict
        rows = [viewers(row.pop("tenant_id")).redact_row("run", row) for row in rows]
        print_json(rows)
        return EXIT_OK
    table = Table("tenant", "run_id", "agent", "status", "started", "records")
    for row in rows:
        table.add_row(row["tenant"], row["run_id"], row["agent_id"], row["status"],
                      row["started_at"].isoformat(timespec="seconds"), str(row["last_seq"] + 1))
    Console().print(table)
    return EXIT_OK


def _timeline_table(run: dict[str, Any], full: bool) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table("seq", "kind", "what", "status", "start", "ms", "details", expand=True)
    start = run["started_at"]
    from runs.redaction import as_text

    for entry in run["timeline"]:
        kind = entry["kind"]
        what = {"tool_call": entry.get("tool"), "model_call": entry.get("model"),
                "step": entry.get("title") or entry.get("step_id"),
                "annotation": entry.get("annotation_kind")}.get(kind) or ""
        what = as_text(what)  # a redacted title is its marker text, not a dict rich refuses
        if entry.get("retry_of"):
            what = f"{what}  (retry of {entry['retry_of']})"
        details = {k: entry.get(k) for k in PAYLOAD_FIELDS
                   if entry.get(k) not in (None, "", {}, [])}
        text = as_text(details) if details else ""
        if not full and len(text) > 160:
            text = text[:157] + "..."
        status = entry.get("status") or ""
        style = "bold red" if status in ("failed", "denied", "error") or entry.get("error") else ""
        began = entry.get("started_at")
        offset = f"+{(began - start).total_seconds():.2f}s" if began else ""
        ms = entry.get("duration_ms") or entry.get("latency_ms")
        table.add_row(str(entry["seq"]), kind, Text(what), Text(status, style=style), offset,
                      "" if ms is None else str(ms), Text(text))
    return table


def cmd_show(args: argparse.Namespace, user: Actor) -> int:
    from rich.console import Console
    from rich.markup import escape

    from core.roles import Role
    from runs.api.presenters import RUN_FIELDS, renamed, timeline_of, values_of
    from runs.models import Run
    from runs.redaction import as_text
    from runs.services import redactor_for

    runs = Run.objects.for_user(user, Role.VIEW_LEDGER).filter(run_id=args.run_id)
    if args.tenant:
        runs = runs.filter(tenant__slug=args.tenant)
    found, code = exactly_one(values_of(runs, RUN_FIELDS, "id", "tenant_id"),
                              f"run {args.run_id!r}")
    if found is None:
        return code
    run = renamed([found])[0]
    run_pk, tenant_id = run.pop("id"), run.pop("tenant_id")
    redaction = redactor_for(user, tenant_id, args.redaction_level,
                             viewing=f"run {run['run_id']} (ledger show)")
    run = redaction.redact_row("run", run)
    run["timeline"] = [redaction.redact_row(e["kind"], e) for e in timeline_of(run_pk, tenant_id)]
    run["redaction"] = redaction.level
    if args.json:
        print_json(run)
        return EXIT_OK
    console = Console()
    ended = run["ended_at"].isoformat(timespec="seconds") if run["ended_at"] else "running"
    trigger = escape(as_text(run["trigger_ref"]) or "-")  # a marker is text, not markup
    console.print(f"[bold]{run['run_id']}[/bold] in [bold]{run['tenant']}[/bold] · agent "
                  f"{run['agent_id']} · {run['status']} · trigger {trigger}")
    console.print(f"goal: {as_text(run['goal'])}", markup=False)
    console.print(f"started {run['started_at'].isoformat(timespec='seconds')} · ended {ended} · "
                  f"{run['last_seq']} records · head {_shown_head(run)} · redaction "
                  f"{redaction.level}")
    console.print(_timeline_table(run, args.full))
    _print_deferred(console, tenant_id, run["run_id"])
    return EXIT_OK


def _print_deferred(console: Any, tenant_id: int, run_id: str) -> None:
    """Where the run's data is missing: the count of its pending deferred items."""
    from runs.deferred import pending_on_run

    pending, _ = pending_on_run(tenant_id, run_id, limit=1)
    if pending:
        console.print(f"Deferred pending ledger schema reconciliation: {pending} item"
                      f"{'s' if pending != 1 else ''} (ledger reconcile --list)", markup=False)


def _shown_head(run: dict[str, Any]) -> str:
    """The chain head as this reader may see it: the hash itself unredacted, else its keyed
    commitment (a hash of redacted content would let the reader test guesses of it)."""
    if run.get("head_hash"):
        return f"{run['head_hash'][:16]}…"
    return f"hmac {run['commitment']['head'][:16]}… (key {run['commitment']['key']})"


def cmd_find(args: argparse.Namespace, user: Actor) -> int:
    from runs.search import CONTAINS_MIN_LENGTH
    from runs.services import find_runs, shown_trigger_refs

    search = find_runs(user, args.query, args.tenant, limit=args.limit)
    if not search.matches:
        short = (f" (a part inside an id needs {CONTAINS_MIN_LENGTH} characters or more)"
                 if search.contains_skipped else "")
        print(f"ledger: no run matches {args.query!r} in your tenants{short}", file=sys.stderr)
        return EXIT_NOT_FOUND
    for run in shown_trigger_refs(user, search.runs):
        print(f"{run.tenant.slug}\t{run.run_id}\t{run.agent.agent_id}\t{run.status}\t"
              f"{run.trigger_ref}\t{run.started_at.isoformat(timespec='seconds')}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, user: Actor) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from core.models import Tenant
    from core.roles import Role
    from runs.deferred import keep_chain_gaps
    from runs.integrity import verify_tenant

    tenants = Tenant.objects.for_user(user, Role.VIEW_LEDGER)
    if args.tenant:
        tenants = tenants.filter(slug=args.tenant)
    tenants_list = list(tenants)
    if not tenants_list:
        print("ledger: no such tenant among yours", file=sys.stderr)
        return EXIT_NOT_FOUND
    console = Console(stderr=True)
    broken = False
    for tenant in tenants_list:
        with Progress(TextColumn(f"verifying {tenant.slug}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True, disable=args.quiet) as bar:
            task = bar.add_task("runs", total=None)

            def advance(done: int, total: int, task: Any = task, bar: Any = bar) -> None:
                bar.update(task, completed=done, total=total)

            report = verify_tenant(tenant, run_id=args.run, progress=advance,
                                   workers=None if args.workers == "auto" else args.workers)
        if args.run and report.runs == 0:
            print(f"ledger: no run {args.run!r} in {tenant.slug}", file=sys.stderr)
            return EXIT_NOT_FOUND
        status = "intact" if report.intact else f"{len(report.breaks)} broken"
        print(f"{tenant.slug}: {report.runs} runs, {report.records} records, "
              f"{report.digests} digests: {status}")
        for problem in report.breaks:
            print(f"  BROKEN {problem}")
        if keep_chain_gaps(tenant, report.breaks, found_by=f"ledger verify ({user})"):
            print("  missing records kept as deferred items: ledger reconcile --tenant "
                  f"{tenant.slug} --source chain_gap --list")
        broken = broken or not report.intact
    return EXIT_TAMPERED if broken else EXIT_OK


def cmd_freeze(args: argparse.Namespace, user: Actor) -> int:
    from core.models import Tenant
    from core.roles import Role
    from policies.services import freeze_tool, unfreeze_tool

    tenant = Tenant.objects.for_user(user, Role.OPERATE).filter(slug=args.tenant).first()
    if tenant is None:
        print(f"ledger: you may not operate on tenant {args.tenant!r}", file=sys.stderr)
        return EXIT_FORBIDDEN
    from incidents.models import Incident
    from incidents.services import freeze_for_incident

    # An incident of the portal (``incident-12`` or ``12``) is linked both ways; anything
    # else is an outside ticket, recorded as given.
    number = (args.incident or "").removeprefix("incident-")
    incident = Incident.objects.filter(tenant=tenant, pk=int(number)).first() \
        if number.isdigit() else None
    if args.unfreeze:
        version = unfreeze_tool(tenant, args.tool, by=user, incident=args.incident or "")
    elif incident is not None:
        version = freeze_for_incident(incident, args.tool, by=user, mode=args.mode)
    else:
        version = freeze_tool(tenant, args.tool, by=user, mode=args.mode,
                              incident=args.incident or "")
    action = "unfrozen" if args.unfreeze else f"frozen ({args.mode})"
    print(f"{args.tool} {action} in {tenant.slug}: {version.policy.name} v{version.number} "
          f"published ({version.checksum[:12]})")
    return EXIT_OK


def cmd_outage(args: argparse.Namespace, user: Actor) -> int:
    from core.models import Tenant
    from core.roles import Role
    from core.services import set_outage_mode

    tenant = Tenant.objects.for_user(user, Role.VIEW_LEDGER).filter(slug=args.tenant).first()
    if tenant is None:
        print(f"ledger: no tenant {args.tenant!r} among yours", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.state is None:
        print(f"{tenant.slug}: outage mode {'on' if tenant.outage_mode else 'off'}")
        return EXIT_OK
    if not args.reason:
        print("ledger: say why with --reason (the outage, the incident, who decided)",
              file=sys.stderr)
        return EXIT_USAGE
    note = set_outage_mode(tenant, by=user, on=args.state == "on", reason=args.reason)
    if note is None:
        print(f"{tenant.slug} already has outage mode {args.state}; nothing recorded")
    else:
        print(f"{tenant.slug}: outage mode {args.state} (annotation {note.annotation_id} in the "
              "governance log)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ledger", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--token-file", help="a file holding your personal access token "
                        "(default: the token in $LEDGER_TOKEN)")
    parser.add_argument("--local", action="store_true",
                        help="local mode, on the portal host: act as --as USER without a "
                        "token (recorded with your OS user and the host)")
    parser.add_argument("--as", dest="acting_as", default=os.environ.get("LEDGER_USER"),
                        help="in local mode, the portal user to act as (default: $LEDGER_USER)")
    sub = parser.add_subparsers(dest="command", required=True)

    runs = sub.add_parser("runs", help="list recent runs")
    runs.add_argument("--tenant")
    runs.add_argument("--agent", help="agent_id")
    runs.add_argument("--status")
    runs.add_argument("--limit", type=int, default=20)
    runs.add_argument("--json", action="store_true")
    runs.set_defaults(func=cmd_runs)

    show = sub.add_parser("show", help="a run with its whole timeline")
    show.add_argument("run_id")
    show.add_argument("--tenant")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.add_argument("--redaction-level", choices=["strict", "standard", "none"],
                      default="strict")
    show.add_argument("--full", action="store_true", help="do not shorten payloads")
    show.set_defaults(func=cmd_show)

    find = sub.add_parser("find", help="runs by run_id, agent_id or alert/request reference "
                          "(whole, its start, or a part of 3+ characters)")
    find.add_argument("query")
    find.add_argument("--tenant")
    find.add_argument("--limit", type=int, default=20)
    find.set_defaults(func=cmd_find)
    freeze = sub.add_parser("freeze", help="block or sandbox a tool now (publishes a policy)")
    freeze.add_argument("tool")
    freeze.add_argument("--tenant", required=True)
    freeze.add_argument("--mode", choices=["deny", "sandbox"], default="deny")
    freeze.add_argument("--incident", help="the incident or ticket id this is for")
    freeze.add_argument("--unfreeze", action="store_true", help="lift the freeze instead")
    freeze.set_defaults(func=cmd_freeze)

    outage = sub.add_parser("outage", help="show, or switch on|off, a tenant's outage mode "
                            "(replays sandbox only; leaving sandbox needs an approval)")
    outage.add_argument("state", nargs="?", choices=["on", "off"],
                        help="without it: show the current mode")
    outage.add_argument("--tenant", required=True)
    outage.add_argument("--reason", help="why (recorded in the governance log)")
    outage.set_defaults(func=cmd_outage)

    verify = sub.add_parser("verify", help="recompute hash chains and check signed digests")
    verify.add_argument("--tenant")
    verify.add_argument("--run", help="only this run_id")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.add_argument("--workers", type=processes_argument, default="auto",
                        help="processes sharing the work (PostgreSQL), or auto (the default): "
                        "one below about 400,000 records a tenant, then more, at most the "
                        "cores and 4")
    verify.set_defaults(func=cmd_verify)
    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "standalone", False):
        # Offline commands (verify-export) run on a machine with no portal: no Django, no user.
        return int(args.func(args))
    _setup()
    from core.tenancy import remember_roles

    return run_command(args.func, args, remember_roles(_acting_user(args)))


def run_command(func: Any, args: argparse.Namespace, user: Actor) -> int:
    """The one place a service's refusal becomes an exit code, so no command catches them:
    PermissionDenied is 3 with the reason, ValidationError 2 with what to fix (services are
    transactional, so nothing of the refused change was recorded)."""
    from django.core.exceptions import PermissionDenied, ValidationError

    try:
        return int(func(args, user))
    except PermissionDenied as exc:
        return fail(str(exc) or "not allowed", EXIT_FORBIDDEN)
    except ValidationError as exc:
        return fail(" ".join(exc.messages), EXIT_USAGE)


if __name__ == "__main__":
    sys.exit(main())
