"""Exports through the Celery tasks: eagerly on the embedded default (the chord's join
coordinated in the database), and on a real worker on Redis that is killed mid-export."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db.models import F

from core import signing
from exports.models import AuditExport, ExportPart
from exports.services import produce_part, request_export
from exports.verify import verify_bundle
from tests.celery_conf import celery_conf, prefork_worker_process, worker_env

from .conftest import WINDOW

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def eager():
    with celery_conf(task_always_eager=True):
        yield


def test_a_chunked_export_runs_through_the_tasks_eagerly(eager, acme, alice, record, make_run,
                                                        export_dirs, settings, bundle_of,
                                                        export_now,
                                                        django_capture_on_commit_callbacks):
    record(acme, *[make_run() for _ in range(4)])
    settings.LEDGER_EXPORT_PART_ROWS = 10
    with django_capture_on_commit_callbacks(execute=True):
        export = request_export(acme, *WINDOW, by=alice)
    export.refresh_from_db()
    assert export.status == "done", export.error
    assert export.parts.count() > 5
    assert export.join_attempts == 1
    assert verify_bundle(bundle_of(export), signing.public_key_b64()).ok
    settings.LEDGER_EXPORT_PART_ROWS = 1_000_000
    single = export_now(acme, alice)
    assert single.parts.count() == len(single.counts)  # one part per section
    assert single.manifest is not None
    assert export.manifest is not None
    assert single.manifest["chain"] == export.manifest["chain"]
    assert single.manifest["files"] == export.manifest["files"]


def test_a_part_whose_worker_keeps_dying_fails_the_export_with_the_reason(
        acme, alice, record, make_run, export_dirs, settings):
    from exports.services import plan

    record(acme, make_run())
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    first = plan(export.pk)[0]
    ExportPart.objects.filter(pk=first).update(status="running",
                                               attempts=settings.LEDGER_EXPORT_MAX_ATTEMPTS)
    assert produce_part(first) is False
    export.refresh_from_db()
    assert export.status == "failed"
    assert "never finished (its worker died)" in export.error
    assert not export.file


@pytest.fixture
def worker(tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    env = worker_env(LEDGER_DATA_DIR=str(tmp_path / "data"),
                     LEDGER_SIGNING_KEY_FILE=str(Path(settings.DATA_DIR) / "signing_key.pem"),
                     LEDGER_EXPORT_PART_ROWS="2000",
                     LEDGER_EXPORT_PROGRESS_ROWS="5")
    # prefork: the pool's child runs the task, so killing it is a lost worker that the parent
    # sees (reject_on_worker_lost requeues the message) and replaces.
    with prefork_worker_process(env, tmp_path / "worker.log"):
        yield tmp_path / "data"


def _wait(condition, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_export_publishes_nothing_half_written_and_the_retry_completes(
        worker, acme, alice, record, make_run):
    from core.signing import signing_key

    signing_key()  # the worker signs with the same key file as this process
    record(acme, *[make_run() for _ in range(60)])
    export = request_export(acme, *WINDOW, by=alice)

    found: list[ExportPart] = []

    def writing() -> bool:
        # the biggest part, caught early in its writing
        found[:] = ExportPart.objects.filter(export=export, section="tool_call",
                                             status="running", rows_done__gt=0,
                                             rows_done__lt=F("estimated_rows") / 3)[:1]
        return bool(found)
    _wait(writing, "a part was not being written")
    victim = found[0]
    pid = int(victim.claimed_by.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    victim.refresh_from_db()
    assert victim.status == "running"  # killed before it could finish
    published = worker / "exports"

    deadline = time.monotonic() + 120
    while (row := AuditExport.objects.get(pk=export.pk)).status not in ("done", "failed"):
        assert not row.file  # no bundle is named before the row says done
        assert time.monotonic() < deadline, "the export did not finish within 120 s"
        time.sleep(0.05)
    export.refresh_from_db()
    assert export.status == "done", export.error
    victim.refresh_from_db()
    assert victim.attempts == 2  # delivered again after its worker was lost
    # the parts are discarded just after the bundle is published
    _wait(lambda: not ExportPart.objects.filter(export=export).exclude(file="").exists(),
          "the parts were not discarded", seconds=30)
    files = sorted(p.relative_to(published).as_posix() for p in published.rglob("*")
                   if p.is_file())
    assert files == [export.file]  # the bundle only: no part, no partial upload left
    report = verify_bundle(published / export.file, signing.public_key_b64())
    assert report.ok, report.problems
    assert report.manifest["record_count"] == export.rows_done > 400
