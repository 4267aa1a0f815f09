"""What every app's ``ledger`` subcommands share: exit codes, one way to say what went wrong,
the one row a command names, JSON output. The dispatcher (``ledger_portal.cli``) sits on top of
every app; this sits below them all, so their commands need not import the dispatcher."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_FORBIDDEN, EXIT_TAMPERED = 0, 1, 2, 3, 4
#: The work did not finish: it failed, was partial, or was still running when the wait ended.
EXIT_INCOMPLETE = 5


def fail(message: str, code: int) -> int:
    print(f"ledger: {message}", file=sys.stderr)
    return code


def exactly_one(queryset: Any, what: str, where: str = "your tenants") -> tuple[Any, int]:
    """The one row a command names (a run_id or call_id is unique per tenant only): the row and
    EXIT_OK, or None and the exit code after saying what is wrong."""
    found = list(queryset[:2])
    if not found:
        return None, fail(f"no {what} in {where}", EXIT_NOT_FOUND)
    if len(found) > 1:
        return None, fail(f"{what} is in several of your tenants; pass --tenant", EXIT_USAGE)
    return found[0], EXIT_OK


def print_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z).decode())
    sys.stdout.write("\n")


def processes_argument(value: str) -> int | str:
    """``--workers``: ``auto`` (chosen by the size of the work) or a number of processes."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: auto or a number of processes (>= 1)")
    return number
