"""The `ledger` command and the demo seed."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from core.cli_support import EXIT_NOT_FOUND, EXIT_OK
from core.models import ApiKey, Tenant
from core.tenancy import has_role
from ledger_portal.cli import main
from runs.annotations import GOVERNANCE_RUN_ID
from runs.models import Run, ToolCall


@pytest.fixture
def recorded(acme, globex, record, make_run):
    run = make_run()
    record(acme, run)
    record(globex, make_run("globex"))
    return run


def test_show_prints_the_run_and_its_timeline_as_json(recorded, alice, capsys):
    assert main(["--as", "alice", "show", recorded["run_id"], "--json"]) == EXIT_OK
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == recorded["run_id"]
    assert [e["seq"] for e in shown["timeline"]] == list(range(1, shown["last_seq"] + 1))


def test_show_sees_only_the_acting_users_tenants(recorded, charlie, capsys):
    assert main(["--as", "charlie", "show", recorded["run_id"]]) == EXIT_NOT_FOUND
    assert "no run" in capsys.readouterr().err


def test_runs_lists_within_the_users_tenants(recorded, charlie, capsys):
    assert main(["--as", "charlie", "runs", "--json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)
    assert listed
    assert {r["tenant"] for r in listed} == {"globex"}


def test_the_cli_needs_a_known_user(db):
    with pytest.raises(SystemExit, match="no active portal user"):
        main(["--as", "nobody", "runs"])


def test_the_demo_seeds_tenants_roles_runs_and_a_key(db, capsys, demo_tool_server):
    call_command("seed_demo", runs=12)
    out = capsys.readouterr().out
    assert "lpk_" in out
    assert set(Tenant.objects.values_list("slug", flat=True)) == {"acme", "globex"}
    agent_runs = Run.objects.filter(tenant__slug="acme").exclude(run_id=GOVERNANCE_RUN_ID)
    assert agent_runs.count() == 12 + 1  # and the run behind the demo's incident
    classes = set(ToolCall.objects.values_list("action_class", flat=True))
    assert classes == {"read", "write", "delete", "exfil"}
    assert ToolCall.objects.filter(retry_of__isnull=False).exists()
    assert ToolCall.objects.filter(status="failed").exists()
    approver = User.objects.get(username="approver")
    assert has_role(approver, "approve", Tenant.objects.get(slug="acme"))
    assert not has_role(approver, "approve", Tenant.objects.get(slug="globex"))

    call_command("seed_demo", runs=12)  # a second seed leaves the ledger as it is
    assert agent_runs.count() == 12 + 1
    assert ApiKey.objects.filter(revoked_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_the_demo_lets_four_eyes_work_without_the_superuser(capsys, demo_tool_server):
    """Two approvers and two governors, pending requests (an exfil one needs both approvers),
    an open incident and an approval route: each role has work waiting on its home page."""
    from approvals.models import ApprovalRequest, ApprovalRoute
    from approvals.queue import pending_queue, queue_entries
    from incidents.models import Incident

    call_command("seed_demo", runs=6)
    out = capsys.readouterr().out
    acme = Tenant.objects.get(slug="acme")
    for username in ("approver", "approver2"):
        assert has_role(User.objects.get(username=username), "approve", acme)
        assert username in out
    for username in ("governor", "governor2"):
        assert has_role(User.objects.get(username=username), "manage_policies", acme)
    exfil = ApprovalRequest.objects.get(tenant=acme, status="pending", action_class="exfil")
    assert exfil.approvals_needed == 2
    approver = User.objects.get(username="approver")
    assert len([e for e in queue_entries(pending_queue(approver), approver) if e.may_decide]) >= 3
    assert Incident.objects.filter(tenant=acme, status="open").exists()
    assert ApprovalRoute.objects.filter(tenant=acme, enabled=True).exists()

    call_command("seed_demo", runs=6)  # seeding again adds no second set
    assert ApprovalRequest.objects.filter(tenant=acme, action_class="exfil").count() == 1
