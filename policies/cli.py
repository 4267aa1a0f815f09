"""``ledger versions``, ``ledger backtest start|show`` and ``ledger exceptions
list|request|grant|revoke``: governance from a terminal, through the services the admin and the
API use (roles, four-eyes and windows checked there), shown as the API shows them."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from core.actors import Actor
from core.cli_support import EXIT_INCOMPLETE, EXIT_NOT_FOUND, EXIT_OK, fail, print_json
from core.roles import Role

POLL_SECONDS = 0.5


def _when(text: str) -> datetime:
    from django.utils import timezone
    from django.utils.dateparse import parse_datetime

    moment = parse_datetime(text)
    if moment is None:
        raise argparse.ArgumentTypeError(f"not a date and time: {text!r} (ISO 8601, e.g. "
                                         "2026-12-01T00:00:00Z)")
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def _narrowed(rows: Any, args: argparse.Namespace) -> Any:
    """``--tenant``, ``--status`` and ``--limit``, as every listing command takes them."""
    if args.tenant:
        rows = rows.filter(tenant__slug=args.tenant)
    if args.status:
        rows = rows.filter(status=args.status)
    return rows[: args.limit]


def cmd_versions(args: argparse.Namespace, user: Actor) -> int:
    from .api.governance import VersionSerializer
    from .models import PolicyVersion

    versions = PolicyVersion.objects.for_user(user, Role.MANAGE_POLICIES).select_related(
        "tenant", "policy", "author", "publisher").order_by("tenant__slug", "policy__name",
                                                            "-number")
    rows = VersionSerializer(_narrowed(versions, args), many=True).data
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        print("No policy versions you govern.")
    for row in rows:
        print(f"{row['id']:>6}  {row['tenant']}  {row['policy']} v{row['number']}  "
              f"{row['status']}  {row['change_note']}")
    return EXIT_OK


def _backtest(user: Actor, pk: int) -> Any:
    from .models import BackTest

    return BackTest.objects.for_user(user, Role.MANAGE_POLICIES).select_related(
        "tenant", "version__policy", "requested_by").filter(pk=pk).first()


def cmd_backtest_start(args: argparse.Namespace, user: Actor) -> int:
    from .backtest import start_backtest
    from .models import PolicyVersion

    version = PolicyVersion.objects.for_user(user, Role.MANAGE_POLICIES).filter(
        pk=args.version_id).first()
    if version is None:
        return fail(f"no policy version {args.version_id} among the policies you govern",
                    EXIT_NOT_FOUND)
    test = start_backtest(version, args.window_from, args.window_to, by=user,
                          agents=args.agent or [], tools=args.tool or [])
    print(f"back-test {test.pk} of {version} queued")
    if not args.wait:
        return EXIT_OK
    return _wait_and_show(user, test.pk, args)


def _wait_and_show(user: Actor, pk: int, args: argparse.Namespace) -> int:
    from .models import BackTest, BackTestStatus

    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline and BackTest.objects.filter(
            pk=pk, status__in=[BackTestStatus.QUEUED, BackTestStatus.RUNNING]).exists():
        time.sleep(POLL_SECONDS)
    return _show(user, pk, args)


def cmd_backtest_show(args: argparse.Namespace, user: Actor) -> int:
    return _show(user, args.backtest_id, args)


def _show(user: Actor, pk: int, args: argparse.Namespace) -> int:
    from .api.governance import BackTestChangeSerializer, BackTestSerializer

    test = _backtest(user, pk)
    if test is None:
        return fail(f"no back-test {pk} among the policies you govern", EXIT_NOT_FOUND)
    changes = list(test.changes.filter(tenant_id=test.tenant_id).order_by("id")[: args.limit])
    shown = BackTestSerializer(test).data
    shown["changes"] = BackTestChangeSerializer(
        changes, many=True, context={"tenant_slug": test.tenant.slug}).data
    code = EXIT_OK if test.status == "done" else EXIT_INCOMPLETE
    if args.json:
        print_json(shown)
        return code
    print(f"back-test {test.pk} of {test.version}: {test.status}, {test.processed:,} of "
          f"{test.total:,} calls ({test.percent}%), {test.changed:,} decided differently")
    if test.error:
        print(f"error: {test.error}")
    if test.redacted_calls:
        print(f"  {test.redacted_calls:,} calls had arguments you see redacted: conditions "
              "read those values as their markers")
    for tool, row in sorted(test.counts.items()):
        print(f"  {tool}: {row['calls']} calls; before {_effects(row['before'])}; after "
              f"{_effects(row['after'])}; {row['changed']} changed")
    for change in shown["changes"]:
        print(f"  {change['call_id']} (run {change['run_id']}): {change['before']} -> "
              f"{change['after']}  {change['timeline']}")
    if test.changed > len(changes):
        print(f"  ... and {test.changed - len(changes):,} more (--limit, or the admin page)")
    return code


def _effects(counts: dict[str, int]) -> str:
    return ", ".join(f"{effect} {n}" for effect, n in sorted(counts.items())) or "-"


def _exceptions(user: Actor) -> Any:
    from .models import GovernedException

    return GovernedException.objects.for_user(user, Role.MANAGE_POLICIES).select_related(
        "tenant", "requested_by", "granted_by", "second_grantor")


def _print_exceptions(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        scope = " ".join(filter(None, [row["tool"], row["agent_id"] and f"agent {row['agent_id']}",
                                       row["action_class"] or "any class"]))
        print(f"{row['id']:>6}  {row['tenant']}  {row['status']}  {scope} -> {row['effect']}  "
              f"{row['starts_at']} .. {row['ends_at']}  asked by {row['requested_by']}: "
              f"{row['justification']}")


def cmd_exceptions_list(args: argparse.Namespace, user: Actor) -> int:
    from .api.governance import ExceptionSerializer

    rows = ExceptionSerializer(_narrowed(_exceptions(user).order_by("-id"), args),
                               many=True).data
    if args.json:
        print_json(rows)
    elif not rows:
        print("No governed exceptions in the tenants you govern.")
    else:
        _print_exceptions(list(rows))
    return EXIT_OK


def cmd_exceptions_request(args: argparse.Namespace, user: Actor) -> int:
    from django.utils import timezone

    from .api.governance import ExceptionSerializer, askable_versions
    from .exceptions import request_exception

    version = askable_versions(user).select_related("tenant").filter(
        pk=args.version_id).first()
    if version is None:
        return fail(f"no policy version {args.version_id} in the tenants where you may ask for "
                    "an exception", EXIT_NOT_FOUND)
    starts = args.starts or timezone.now()
    exc = request_exception(version.tenant, by=user, policy_version=version, tool=args.tool,
                            agent_id=args.agent or "", action_class=args.action_class or "",
                            effect=args.effect, justification=args.justification,
                            starts_at=starts, ends_at=starts + timedelta(hours=args.hours))
    print(f"exception {exc.pk} requested; someone else who governs {version.tenant.slug} "
          "grants it" + (" (two people: it can cover exfil)" if exc.action_class in (
              "", "exfil") else ""))
    _print_exceptions([dict(ExceptionSerializer(exc).data)])
    return EXIT_OK


def cmd_exceptions_step(args: argparse.Namespace, user: Actor) -> int:
    from .api.governance import ExceptionSerializer
    from .exceptions import grant_exception, revoke_exception

    exc = _exceptions(user).filter(pk=args.exception_id).first()
    if exc is None:
        return fail(f"no exception {args.exception_id} in the tenants you govern",
                    EXIT_NOT_FOUND)
    step = grant_exception if args.exceptions_command == "grant" else revoke_exception
    _print_exceptions([dict(ExceptionSerializer(step(exc, by=user)).data)])
    return EXIT_OK


def add_commands(sub: Any) -> None:
    versions = sub.add_parser("versions", help="the policy versions you govern, with their ids")
    versions.add_argument("--tenant")
    versions.add_argument("--status", choices=["draft", "published", "retired"])
    versions.add_argument("--limit", type=int, default=100)
    versions.add_argument("--json", action="store_true")
    versions.set_defaults(func=cmd_versions)

    backtest = sub.add_parser("backtest", help="back-test a policy version on recorded calls")
    verbs = backtest.add_subparsers(dest="backtest_command", required=True)
    start = verbs.add_parser("start", help="queue a back-test (a worker runs it)")
    start.add_argument("version_id", type=int, help="from `ledger versions`")
    start.add_argument("--from", dest="window_from", type=_when, required=True)
    start.add_argument("--to", dest="window_to", type=_when, required=True)
    start.add_argument("--agent", action="append", help="only this agent's calls (repeatable)")
    start.add_argument("--tool", action="append", help="only this tool's calls (repeatable)")
    start.add_argument("--wait", type=float, default=0,
                       help="seconds to wait for the result (exit 5 if it is not done)")
    start.add_argument("--limit", type=int, default=20, help="changed calls to list")
    start.add_argument("--json", action="store_true")
    start.set_defaults(func=cmd_backtest_start)
    show = verbs.add_parser("show", help="progress, per-tool counts and the changed calls")
    show.add_argument("backtest_id", type=int)
    show.add_argument("--limit", type=int, default=20, help="changed calls to list")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_backtest_show)

    exceptions = sub.add_parser("exceptions", help="governed exceptions: list, ask, grant, "
                                "revoke")
    steps = exceptions.add_subparsers(dest="exceptions_command", required=True)
    listed = steps.add_parser("list", help="newest first")
    listed.add_argument("--tenant")
    listed.add_argument("--status", choices=["requested", "awaiting_second", "active",
                                             "revoked"])
    listed.add_argument("--limit", type=int, default=50)
    listed.add_argument("--json", action="store_true")
    listed.set_defaults(func=cmd_exceptions_list)
    ask = steps.add_parser("request", help="ask for an exception to a published version")
    ask.add_argument("--version", dest="version_id", type=int, required=True)
    ask.add_argument("--tool", required=True, help="tool name or glob, e.g. delete_*")
    ask.add_argument("--agent", help="only this agent (through a key bound to it)")
    ask.add_argument("--action-class", choices=["read", "write", "delete", "exfil"])
    ask.add_argument("--effect", default="allow",
                     choices=["allow", "sandbox_only", "require_approval", "deny"])
    ask.add_argument("--justification", "-j", required=True)
    ask.add_argument("--starts", type=_when, help="default: now")
    ask.add_argument("--hours", type=float, default=4, help="how long it lasts (default 4)")
    ask.set_defaults(func=cmd_exceptions_request)
    for verb, what in (("grant", "grant one someone else asked for (exfil: two grantors)"),
                       ("revoke", "end one now")):
        step = steps.add_parser(verb, help=what)
        step.add_argument("exception_id", type=int)
        step.set_defaults(func=cmd_exceptions_step)
