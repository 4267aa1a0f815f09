"""A job that sits queued with no worker alive says so on its page, instead of a spinner that
never ends: who should be picking it up and how long it has waited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.workers import record_heartbeat
from exports.models import AuditExport
from exports.services import request_export
from operations.models import Replay
from operations.replay import start_replay
from runs.models import Run

pytestmark = pytest.mark.django_db
HINT = "no worker has picked this up for"


def queued_for(model, pk, seconds):
    model.objects.filter(pk=pk).update(created_at=timezone.now() - timedelta(seconds=seconds))


def test_an_export_queued_for_minutes_with_no_worker_says_to_start_one(acme, alice, client):
    now = timezone.now()
    export = request_export(acme, now - timedelta(days=1), now, by=alice,
                            redaction_level="strict", fmt="jsonl", justification="")
    client.force_login(alice)
    assert HINT not in client.get("/exports/").content.decode()  # young: no alarm yet

    queued_for(AuditExport, export.pk, 150)
    page = client.get("/exports/").content.decode()
    assert f"{HINT} 150 s" in page or f"{HINT} 151 s" in page
    assert "make worker" in page

    record_heartbeat("celery@alive")
    assert HINT not in client.get("/exports/").content.decode()


def test_a_replay_queued_with_no_worker_says_so_on_its_page(acme, alice, client, make_run,
                                                           record):
    run = make_run()
    record(acme, run)
    replay = start_replay(Run.objects.get(run_id=run["run_id"]), by=alice)
    assert replay.status == "queued"
    queued_for(Replay, replay.pk, 300)
    client.force_login(alice)
    page = client.get(f"/runs/acme/replays/{replay.pk}/").content.decode()
    assert HINT in page
