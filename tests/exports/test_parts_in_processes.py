"""``ledger export`` on several cores: the parts are written by fresh processes at once, as
Celery workers would write them, and the bundle is the one a single process makes; a part
failing in another process fails the export with its reason and leaves nothing behind."""

from __future__ import annotations

import os
import tarfile

import orjson
import pytest
from django.db import transaction

from exports.models import AuditExport, ExportPart
from exports.services import produce_now, request_export
from exports.verify import VOLATILE_MANIFEST_FIELDS

from .conftest import WINDOW

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read()
        return out


def _writers(export: AuditExport) -> set[str]:
    return set(ExportPart.objects.filter(export=export).values_list("claimed_by", flat=True))


def _export(acme, alice, workers):
    return produce_now(request_export(acme, *WINDOW, by=alice, enqueue=False),
                       workers=workers)


def test_parts_written_by_two_processes_make_the_bundle_one_process_makes(
        acme, alice, record, make_run, export_dirs, bundle_of, settings, caplog):
    record(acme, *[make_run() for _ in range(6)])
    settings.LEDGER_EXPORT_PART_ROWS = 9  # many parts, for two processes to share
    alone = _export(acme, alice, workers=1)
    with caplog.at_level("INFO", logger="exports.services"):
        shared = _export(acme, alice, workers=2)
    assert alone.status == shared.status == "done", shared.error
    # this process joined the parts while the other two wrote them
    assert f"export {shared.pk}: the parts were joined as they were written" in caplog.text
    assert shared.parts.count() > 4
    this_process = _writers(alone)
    assert len(this_process) == 1
    writers = _writers(shared)
    assert len(writers) == 2  # two other processes, each a part at least
    assert not writers & this_process
    assert not any(name.endswith(f":{os.getpid()}") for name in writers)

    # the parts were published where this test's settings say (the processes got them)
    first, second = _members(bundle_of(alone)), _members(bundle_of(shared))
    for name in ("records.jsonl", "records.idx"):
        assert first[name] == second[name]
    manifests = [orjson.loads(m["manifest.json"]) for m in (first, second)]
    for manifest in manifests:
        for volatile in VOLATILE_MANIFEST_FIELDS:
            manifest.pop(volatile)
    assert manifests[0] == manifests[1]
    assert shared.rows_done == alone.rows_done == sum(shared.counts.values())


def test_a_part_failing_in_another_process_fails_the_export_and_leaves_no_part(
        acme, alice, record, make_run, export_dirs, settings):
    record(acme, *[make_run() for _ in range(3)])
    settings.LEDGER_EXPORT_PART_ROWS = 9
    # A file where the part-writing folder should be: every part fails to open its file.
    blocked = export_dirs / "blocked"
    blocked.write_text("not a folder")
    settings.LEDGER_EXPORT_TMP_DIR = blocked
    export = _export(acme, alice, workers=2)
    assert export.status == "failed"
    assert "NotADirectoryError" in export.error  # the reason, from the process that met it
    assert not export.file
    assert not ExportPart.objects.filter(export=export).exclude(file="").exists()
    published = export_dirs / "published"
    assert not published.exists() or not any(p.is_file() for p in published.rglob("*"))


def test_inside_a_callers_transaction_the_parts_stay_in_this_process(
        acme, alice, record, make_run, export_dirs, settings):
    """Other processes would not see the plan this transaction has not committed."""
    record(acme, *[make_run() for _ in range(2)])
    settings.LEDGER_EXPORT_PART_ROWS = 9
    with transaction.atomic():
        export = _export(acme, alice, workers=2)
    assert export.status == "done", export.error
    assert len(_writers(export)) == 1
    assert next(iter(_writers(export))).endswith(f":{os.getpid()}")


def test_a_small_export_is_written_in_one_process_when_the_count_is_chosen(
        acme, alice, record, make_run, export_dirs, settings):
    record(acme, *[make_run() for _ in range(2)])
    settings.LEDGER_EXPORT_PART_ROWS = 9
    export = _export(acme, alice, workers=None)
    assert export.status == "done", export.error
    assert export.parts.count() > 1
    assert {name.rsplit(":", 1)[1] for name in _writers(export)} == {str(os.getpid())}
