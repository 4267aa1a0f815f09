"""``ledger export`` on several cores joins the parts while the other processes still write
them: the join's one pass over every record (numbering, line hashes, the chain) runs beside
the writers instead of after them. The files so joined are taken only when the export still
holds the very parts they were joined from; otherwise the join reads the parts afresh."""

from __future__ import annotations

import tarfile
import threading
from concurrent.futures import Future

import pytest

from core import signing
from core.processes import finished_in_order
from exports.models import AuditExport, ExportPart, PartStatus
from exports.services import follow_parts, join, plan, produce_now, produce_part, request_export
from exports.storage import export_storage
from exports.verify import verify_bundle

from .conftest import WINDOW

pytestmark = pytest.mark.django_db


def _finished(count: int) -> list[Future[bool]]:
    futures: list[Future[bool]] = []
    for _ in range(count):
        future: Future[bool] = Future()
        future.set_result(True)
        futures.append(future)
    return futures


def _parts_written(acme, alice) -> tuple[AuditExport, list[int]]:
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    part_ids = plan(export.pk)
    for part_id in part_ids:
        produce_part(part_id)
    return AuditExport.objects.get(pk=export.pk), part_ids


def _records(path) -> bytes:
    with tarfile.open(path) as tar:
        member = tar.extractfile("records.jsonl")
        assert member is not None
        return member.read()


@pytest.fixture
def reference(acme, alice, record, make_run, export_dirs, bundle_of, settings) -> bytes:
    """The records file of the same window exported in one process, joined after its parts."""
    record(acme, *[make_run() for _ in range(3)])
    settings.LEDGER_EXPORT_PART_ROWS = 9  # several parts
    export = produce_now(request_export(acme, *WINDOW, by=alice, enqueue=False), workers=1)
    assert export.status == "done", export.error
    return _records(bundle_of(export))


def test_the_join_takes_the_followed_files_without_reading_the_parts_again(
        acme, alice, reference, bundle_of, caplog):
    export, part_ids = _parts_written(acme, alice)
    followed = follow_parts(export, part_ids, _finished(len(part_ids)))
    assert followed is not None
    assert [index for index, _, _ in followed.parts] == list(range(len(part_ids))) != [0]
    for name in ExportPart.objects.filter(export=export).values_list("file", flat=True):
        export_storage().delete(name)  # the join has nothing left to read them from

    with caplog.at_level("INFO", logger="exports.services"):
        done = join(export.pk, followed)
    assert done is not None
    assert done.status == "done", done.error
    assert "joined as they were written" in caplog.text
    assert verify_bundle(bundle_of(done), signing.public_key_b64()).ok
    assert _records(bundle_of(done)) == reference


def test_a_part_written_again_after_it_was_followed_sends_the_join_back_to_the_parts(
        acme, alice, reference, bundle_of, caplog):
    export, part_ids = _parts_written(acme, alice)
    followed = follow_parts(export, part_ids, _finished(len(part_ids)))
    assert followed is not None
    # Part 0 written once more (a watchdog handed it out again): another file holds it now.
    ExportPart.objects.filter(pk=part_ids[0]).update(status=PartStatus.QUEUED)
    produce_part(part_ids[0])
    assert ExportPart.objects.get(pk=part_ids[0]).file != followed.parts[0][1]
    # What was followed is no longer what the export holds: were it taken, this would show.
    (followed.directory / followed.joined.data_name).write_bytes(b"not the records\n")

    with caplog.at_level("INFO", logger="exports.services"):
        done = join(export.pk, followed)
    assert done is not None
    assert done.status == "done", done.error
    assert "joined as they were written" not in caplog.text
    assert verify_bundle(bundle_of(done), signing.public_key_b64()).ok
    assert _records(bundle_of(done)) == reference


def test_following_stops_when_a_part_ends_without_its_file(acme, alice, reference):
    export, part_ids = _parts_written(acme, alice)
    ExportPart.objects.filter(pk=part_ids[-1]).update(status=PartStatus.RUNNING)
    assert follow_parts(export, part_ids, _finished(len(part_ids))) is None


def test_parts_finish_in_order_and_the_first_failure_is_raised_at_once():
    first: Future[bool] = Future()
    second: Future[bool] = Future()
    third: Future[bool] = Future()
    order = finished_in_order([first, second, third])
    threading.Timer(0.05, first.set_result, [True]).start()
    assert next(order) == 0  # waits for the first, not for the others
    third.set_exception(RuntimeError("part 2 failed"))
    with pytest.raises(RuntimeError, match="part 2 failed"):
        next(order)  # the second is still being written: no need to wait for it
    assert not second.done()


def test_the_parts_are_handed_out_in_their_order_unless_one_would_end_alone():
    from exports.services import _writing_order

    # a full window: sections cut into parts of the same size; in order ends as soon
    full = [(1, 73), (2, 250), (3, 76), (4, 250), (5, 76), (6, 250), (7, 250), (8, 250),
            (9, 250), (10, 68)]
    assert _writing_order(full, 2) == list(range(1, 11))
    # a small window: the tool calls' one part is most of it, and fourth in order
    small = [(1, 7), (2, 33), (3, 33), (4, 100), (5, 7)]
    assert _writing_order(small, 2) == [4, 2, 3, 1, 5]
