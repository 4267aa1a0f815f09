"""A whole worker killed mid-export (SIGKILL to the parent and its pool: nothing acknowledges,
nothing hands the message back, and Redis keeps it unacknowledged until its long visibility
timeout): the export does not stay "running 59%". Another worker's watchdog sees it stalled,
queues its unfinished parts again, and it completes; its progress never goes backwards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.db.models import F

from core import signing
from core.signing import signing_key
from exports.models import AuditExport, ExportPart
from exports.services import request_export
from exports.storage import export_storage
from exports.verify import verify_bundle
from tests.exports.conftest import WINDOW

from .conftest import Worker, broker_at, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
SMALL_PARTS = {"LEDGER_EXPORT_PART_ROWS": "2000", "LEDGER_EXPORT_PROGRESS_ROWS": "5"}


@pytest.fixture
def broker(own_redis: Any) -> Iterator[Any]:
    with broker_at(own_redis.url):
        yield own_redis


class ProgressWatch:
    """Samples the export's progress from its own connection while the test goes on."""

    def __init__(self, export_id: int) -> None:
        self.export_id, self.samples = export_id, list[int]()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample)
        self.thread.start()

    def _sample(self) -> None:
        try:
            while not self.stop.is_set():
                self.samples.append(AuditExport.objects.values_list("rows_done", flat=True)
                                    .get(pk=self.export_id))
                time.sleep(0.02)
        finally:
            connection.close()

    def done(self) -> list[int]:
        self.stop.set()
        self.thread.join(10)
        return self.samples


def test_an_export_whose_whole_worker_was_killed_is_requeued_by_the_watchdog_and_completes(
        broker, tmp_path: Path, acme, alice, record, make_run):
    signing_key()  # the workers sign with this process's key file
    record(acme, *[make_run() for _ in range(120)])
    first = Worker(broker.url, tmp_path / "first.log", **SMALL_PARTS).start()
    export = request_export(acme, *WINDOW, by=alice)
    watch = ProgressWatch(export.pk)
    try:
        try:
            wait_for("a part being written", lambda: ExportPart.objects.filter(
                export=export, status="running", rows_done__gt=0,
                rows_done__lt=F("estimated_rows")).exists(), worker=first, every=0.005)
        finally:
            first.kill_all()
        stopped_at = AuditExport.objects.get(pk=export.pk)
        assert stopped_at.status == "running"
        assert stopped_at.rows_done > 0
        time.sleep(3)
        assert AuditExport.objects.get(pk=export.pk).status == "running"  # nobody else has it

        # Another worker, whose beat runs the watchdogs every 2 s with a 5 s stall time.
        second = Worker(broker.url, tmp_path / "second.log", "--beat", "--schedule",
                        str(tmp_path / "beat-schedule"), LEDGER_JOB_STALL_SECONDS="5",
                        LEDGER_WATCHDOG_INTERVAL="2", **SMALL_PARTS).start()
        try:
            done = wait_for("the export finishing", lambda: AuditExport.objects.filter(
                pk=export.pk, status__in=["done", "failed"]).first(), seconds=120,
                worker=second)
        finally:
            second.stop()
    finally:
        samples = watch.done()
    assert done.status == "done", done.error
    assert done.stalls == 1
    assert samples == sorted(samples), "the progress went backwards"
    assert ExportPart.objects.filter(export=export, attempts=2).exists()
    report = verify_bundle(Path(export_storage().path(done.file)), signing.public_key_b64())
    assert report.ok, report.problems


def test_a_part_claimed_again_while_written_leaves_the_export_to_the_newer_attempt(
        acme, alice, record, make_run, export_dirs, settings):
    """The watchdog's copy of a part (or a redelivery) claims it while the first attempt still
    writes: the first finds itself superseded and stands down; the export is not failed."""
    from exports.services import plan, produce_part

    settings.LEDGER_EXPORT_PROGRESS_ROWS = 5
    record(acme, *[make_run() for _ in range(60)])
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    part_ids = plan(export.pk)
    biggest = ExportPart.objects.filter(pk__in=part_ids).order_by("-estimated_rows").first()
    assert biggest is not None
    outcome: dict[str, Any] = {}

    def first_attempt() -> None:
        try:
            outcome["first"] = produce_part(biggest.pk)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=first_attempt)
    thread.start()
    wait_for("the first attempt writing", lambda: ExportPart.objects.filter(
        pk=biggest.pk, attempts=1, rows_done__gt=0).exists(), every=0.002)
    second = produce_part(biggest.pk)  # the second attempt, in this thread
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["first"] is False  # superseded: it stood down
    assert second is False or second is True
    export.refresh_from_db()
    assert export.status == "running", export.error  # not failed by the superseded attempt
    part = ExportPart.objects.get(pk=biggest.pk)
    assert (part.status, part.attempts) == ("done", 2)
