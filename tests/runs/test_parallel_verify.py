"""Verification shared among worker processes (one exported snapshot) finds what a single
pass finds."""

from __future__ import annotations

import pytest
from django.db import connection

from runs.integrity import seal_tenant_digest, verify_tenant
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
