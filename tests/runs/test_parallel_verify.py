"""Verification shared among worker processes (one exported snapshot) finds what a single
pass finds."""

from __future__ import annotations

import os

import pytest
from django.db import connection

from core.cli_support import EXIT_OK
from ledger_portal.cli import main
from runs import integrity_parallel
from runs.integrity import seal_tenant_digest, verify_tenant
from runs.integrity_parallel import tenant_records
from runs.models import Run, ToolCall

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_workers_agree_with_a_single_pass(acme, record, make_run):
    record(acme, *[make_run() for _ in range(30)])
    seal_tenant_digest(acme)
    intact = verify_tenant(acme, workers=2)
    assert intact.intact
    assert intact.runs == 30
    assert intact.records == verify_tenant(acme, workers=1).records

    victim = Run.objects.filter(tenant=acme).order_by("pk")[17]
    call = ToolCall.objects.filter(run=victim).order_by("seq")[0]
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
        cursor.execute("UPDATE runs_toolcall SET status = 'denied' WHERE id = %s", [call.pk])
        cursor.execute("SET session_replication_role = DEFAULT")
    parallel = verify_tenant(acme, workers=2)
    serial = verify_tenant(acme, workers=1)
    assert [str(b) for b in parallel.breaks] == [str(b) for b in serial.breaks]
    assert [(b.run_id, b.seq, b.problem) for b in parallel.breaks] == [
        (victim.run_id, call.seq, "modified")]


# -- ledger verify chooses the processes by the tenant's size ---------------------------------


@pytest.fixture
def parallel_calls(monkeypatch):
    """The worker counts ``verify_in_parallel`` is called with (it still runs)."""
    calls: list[int] = []
    real = integrity_parallel.verify_in_parallel

    def spy(tenant, workers, progress):
        calls.append(workers)
        return real(tenant, workers, progress)

    monkeypatch.setattr(integrity_parallel, "verify_in_parallel", spy)
    return calls


def test_ledger_verify_checks_a_small_tenant_in_one_process(acme, alice, record, make_run,
                                                           parallel_calls, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    record(acme, *[make_run() for _ in range(5)])
    assert main(["--as", "alice", "verify", "--tenant", "acme", "--quiet"]) == EXIT_OK
    assert parallel_calls == []


def test_ledger_verify_shares_a_tenant_over_the_threshold(acme, alice, record, make_run,
                                                         parallel_calls, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    record(acme, *[make_run() for _ in range(5)])
    monkeypatch.setattr(integrity_parallel, "PARALLEL_FROM_RECORDS", tenant_records(acme))
    # choose_workers' default was bound at import: the CLI must read the setting per call
    assert main(["--as", "alice", "verify", "--tenant", "acme", "--quiet"]) == EXIT_OK
    assert parallel_calls == [2]


def test_an_explicit_worker_count_wins_over_the_size(acme, alice, record, make_run,
                                                    parallel_calls):
    record(acme, *[make_run() for _ in range(5)])
    assert main(["--as", "alice", "verify", "--tenant", "acme", "--quiet",
                 "--workers", "2"]) == EXIT_OK
    assert parallel_calls == [2]


def test_ledger_verify_refuses_a_worker_count_below_one(capsys):
    with pytest.raises(SystemExit):
        main(["--as", "alice", "verify", "--workers", "0"])
    assert "auto or a number" in capsys.readouterr().err
