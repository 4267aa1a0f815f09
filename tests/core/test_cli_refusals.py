"""One error wrapper for every ``ledger`` subcommand: a service's refusal is an exit code and a
line on stderr, never a traceback, whichever app the command belongs to."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from core.cli_support import EXIT_FORBIDDEN, EXIT_OK, EXIT_USAGE
from core.models import Tenant
from ledger_portal import cli


def _refusing(exc: Exception) -> Any:
    def command(args: argparse.Namespace, user: Any) -> int:
        raise exc
    return command


def test_a_permission_refusal_is_exit_3_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run_command(_refusing(PermissionDenied("needs the operate role")),
                           argparse.Namespace(), None)
    assert code == EXIT_FORBIDDEN
    assert capsys.readouterr().err == "ledger: needs the operate role\n"


def test_a_validation_refusal_is_exit_2_with_every_message(
        capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.run_command(_refusing(ValidationError(["say why", "name a tool"])),
                           argparse.Namespace(), None)
    assert code == EXIT_USAGE
    assert capsys.readouterr().err == "ledger: say why name a tool\n"


def test_anything_else_is_not_swallowed() -> None:
    with pytest.raises(KeyError):
        cli.run_command(_refusing(KeyError("bug")), argparse.Namespace(), None)


@pytest.mark.parametrize("argv", [
    ["outage", "on", "--tenant", "acme", "--reason", "   "],          # ledger_portal
    ["hold", "--tenant", "acme", "--reason", "T-1", "--run-id", "nope"],  # runs
    ["incident", "open", "--tenant", "acme", "--title", ""],           # incidents
])
def test_the_apps_commands_go_through_it(argv: list[str], acme: Tenant, alice: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--as", "alice", *argv])
    err = capsys.readouterr().err
    assert code in (EXIT_USAGE, EXIT_FORBIDDEN), err
    assert err.startswith("ledger: ")
    assert "Traceback" not in err


def test_a_command_that_succeeds_returns_its_code(acme: Tenant, alice: Any) -> None:
    assert cli.main(["--as", "alice", "outage", "--tenant", "acme"]) == EXIT_OK
