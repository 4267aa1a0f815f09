"""Scaling out on one machine: two Celery workers on one PostgreSQL and Redis, a sandbox
replay, a multi-part export and a back-test queued at once; each finishes, and nothing is done
twice (every export part written once, every replay step once and each tool asked once per
step, every changed call of the back-test kept once)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from ledger_portal.tool_server import http_tool_server
from tests.celery_conf import worker_env
from tests.replay.scenario import allow_everything, recorded_run, stored_run, wire_tools

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
PART_ROWS = 200  # small parts, so an export has several for the two workers to share


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    env = worker_env(LEDGER_DATA_DIR=str(settings.DATA_DIR),
                     LEDGER_EXPORT_TMP_DIR=str(settings.LEDGER_EXPORT_TMP_DIR),
                     LEDGER_EXPORT_PART_ROWS=str(PART_ROWS),
                     LEDGER_EGRESS_ALLOW="127.0.0.1,localhost")
    workers, logs = [], []
    for n in range(2):
        log = (tmp_path / f"worker-{n}.log").open("w")
        logs.append(log)
        workers.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ledger_portal", "worker", "-n",
             f"scale-{n}-{os.getpid()}@%h", "--pool", "solo", "--loglevel", "WARNING",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield workers
    finally:
        for process in workers:
            process.terminate()
        for process in workers:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        for log in logs:
            log.close()


def _until(done: Any, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what} did not finish within {seconds} s"
        time.sleep(0.3)


def test_two_workers_share_a_replay_an_export_and_a_backtest_doing_nothing_twice(
        two_workers, acme, alice, record, make_run, settings, tmp_path):
    from exports.models import AuditExport, ExportStatus
    from exports.services import request_export
    from operations.models import Replay
    from operations.replay import start_replay
    from policies.backtest import start_backtest
    from policies.models import BackTest, Rule
    from policies.services import create_draft

    settings.LEDGER_EXPORT_PART_ROWS = PART_ROWS
    record(acme, recorded_run(), *[make_run() for _ in range(30)])
    published = allow_everything(acme)
    draft = create_draft(published.policy, by=alice, change_note="deny writes")
    Rule.objects.create(tenant=acme, version=draft, name="no writes", action_classes=["write"],
                        effect="deny")
    window = (timezone.now() - timedelta(days=3650), timezone.now() + timedelta(days=1))
    with http_tool_server() as server:
        wire_tools(acme, server)
        replay = start_replay(stored_run(acme), by=alice)
        export = request_export(acme, *window, by=alice)
        test = start_backtest(draft, *window, by=alice)

        _until(lambda: Replay.objects.get(pk=replay.pk).status not in ("queued", "running"),
               "the replay")
        _until(lambda: AuditExport.objects.get(pk=export.pk).status in (
            ExportStatus.DONE, ExportStatus.FAILED), "the export")
        _until(lambda: BackTest.objects.get(pk=test.pk).status in ("done", "failed"),
               "the back-test")
        asked = [seen.path for seen in server.seen]

    replay.refresh_from_db()
    assert replay.status == "succeeded", replay.failure_reason
    seqs = list(replay.steps.values_list("seq", flat=True))
    assert len(seqs) == len(set(seqs)) == replay.steps_total
    assert sorted(asked) == sorted(set(asked))  # each tool asked once per replayed step

    export.refresh_from_db()
    assert export.status == ExportStatus.DONE, export.error
    parts = list(export.parts.values_list("index", flat=True))
    assert len(parts) > 1  # the parts were spread over the workers
    assert sorted(parts) == sorted(set(parts))

    test.refresh_from_db()
    assert test.status == "done", test.error
    assert test.processed == test.total > 0
    changed = list(test.changes.values_list("call_id", flat=True))
    assert len(changed) == len(set(changed)) == test.changed > 0
