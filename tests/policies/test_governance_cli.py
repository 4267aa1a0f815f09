"""Governance from a terminal: `ledger versions`, `ledger backtest`, `ledger exceptions`,
through the same services and rules as the admin and the API."""

from __future__ import annotations

import json

import pytest

from core.cli_support import EXIT_FORBIDDEN, EXIT_INCOMPLETE, EXIT_NOT_FOUND, EXIT_OK
from ledger_portal.cli import main
from policies.models import BackTest, GovernedException, Rule
from policies.services import create_draft
from policies.tasks import run_backtest
from runs.models import ToolCall

pytestmark = pytest.mark.django_db


def test_a_governor_finds_a_draft_backtests_it_and_reads_the_changed_calls(
        acme, alice, publish, record, make_run, capsys):
    record(acme, *[make_run() for _ in range(6)])
    tools = publish([{"name": "allow all", "effect": "allow"}])
    draft = create_draft(tools.policy, by=alice, change_note="block exfil")
    Rule.objects.create(tenant=acme, version=draft, name="no exfil", action_classes=["exfil"],
                        effect="deny")

    assert main(["--as", "alice", "versions", "--status", "draft", "--json"]) == EXIT_OK
    assert [v["id"] for v in json.loads(capsys.readouterr().out)] == [draft.pk]
    # no worker picks it up inside the test's transaction: the wait ends unfinished
    code = main(["--as", "alice", "backtest", "start", str(draft.pk), "--from",
                 "2000-01-01T00:00:00Z", "--to", "2100-01-01", "--wait", "0.5"])
    assert code == EXIT_INCOMPLETE
    assert "queued" in capsys.readouterr().out
    test = BackTest.objects.get(version=draft)
    run_backtest.apply(args=(test.pk,))

    assert main(["--as", "alice", "backtest", "show", str(test.pk), "--limit", "1000"]) == EXIT_OK
    out = capsys.readouterr().out
    for call_id in ToolCall.objects.filter(tenant=acme, action_class="exfil").values_list(
            "call_id", flat=True):
        assert f"{call_id} (run " in out
    assert "allow -> deny" in out


def test_a_bad_date_is_a_usage_error_and_queues_nothing(acme, alice, publish, capsys):
    draft = create_draft(publish([]).policy, by=alice, change_note="x")
    with pytest.raises(SystemExit) as exited:
        main(["--as", "alice", "backtest", "start", str(draft.pk), "--from", "last tuesday",
              "--to", "2100-01-01"])
    assert exited.value.code == 2
    assert "not a date and time" in capsys.readouterr().err
    assert not BackTest.objects.exists()


def test_an_exception_asked_in_the_terminal_is_granted_by_someone_else(
        acme, alice, olivia, publish, capsys):
    version = publish([{"name": "no deletes", "action_classes": ["delete"], "effect": "deny"}])
    operator = olivia
    assert main(["--as", "olivia", "exceptions", "request", "--version", str(version.pk),
                 "--tool", "delete_record", "--action-class", "delete", "-j",
                 "GDPR backlog PRIV-9", "--hours", "2"]) == EXIT_OK
    exc = GovernedException.objects.get()
    assert (exc.requested_by, exc.status) == (operator, "requested")
    capsys.readouterr()

    assert main(["--as", "olivia", "exceptions", "grant", str(exc.pk)]) == EXIT_NOT_FOUND
    assert main(["--as", "alice", "exceptions", "grant", str(exc.pk)]) == EXIT_OK
    assert GovernedException.objects.get().status == "active"
    assert main(["--as", "alice", "exceptions", "list", "--json"]) == EXIT_OK
    capsys.readouterr()
    assert main(["--as", "alice", "exceptions", "revoke", str(exc.pk)]) == EXIT_OK
    assert GovernedException.objects.get().status == "revoked"


def test_the_requester_cannot_grant_in_the_terminal_either(acme, alice, publish, capsys):
    version = publish([])
    assert main(["--as", "alice", "exceptions", "request", "--version", str(version.pk),
                 "--tool", "x", "-j", "why"]) == EXIT_OK
    exc = GovernedException.objects.get()
    assert main(["--as", "alice", "exceptions", "grant", str(exc.pk)]) == EXIT_FORBIDDEN
    assert "separation of duties" in capsys.readouterr().err
    assert GovernedException.objects.get().status == "requested"


def test_another_tenants_versions_backtests_and_exceptions_are_not_found(
        acme, globex, alice, charlie, publish, capsys):
    version = publish([])
    draft = create_draft(version.policy, by=alice, change_note="x")
    assert main(["--as", "charlie", "backtest", "start", str(draft.pk), "--from",
                 "2000-01-01", "--to", "2100-01-01"]) == EXIT_NOT_FOUND
    assert main(["--as", "charlie", "exceptions", "request", "--version", str(version.pk),
                 "--tool", "x", "-j", "why"]) == EXIT_NOT_FOUND
    capsys.readouterr()
    assert main(["--as", "charlie", "versions", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
    assert not BackTest.objects.exists()
    assert not GovernedException.objects.exists()
