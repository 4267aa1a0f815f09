"""A part file altered in storage between the worker that wrote it and the join is never
signed: each part carries the checksum its worker computed while writing it, and the join
checks every part against it before anything is signed or published."""

from __future__ import annotations

import pytest

from exports.models import AuditExport, ExportPart
from exports.services import PartAltered, join, plan, produce_part, request_export
from exports.storage import export_storage

from .conftest import WINDOW


def test_a_part_altered_before_the_join_fails_the_export_unsigned(acme, alice, record,
                                                                  make_run, export_dirs):
    record(acme, make_run(), make_run())
    export = request_export(acme, *WINDOW, by=alice, enqueue=False)
    for part_id in plan(export.pk):
        produce_part(part_id)
    part = ExportPart.objects.filter(export=export).exclude(file="").order_by("index").first()
    assert part is not None
    assert len(part.sha256) == 64
    storage = export_storage()
    with storage.open(part.file, "rb") as handle:
        original = handle.read()
    storage.delete(part.file)
    storage.save(part.file, _bytes(original.replace(b'"run"', b'"RUN"', 1) + b"{}\n"))
    with pytest.raises(PartAltered):  # the task would retry; the export is failed already
        join(export.pk)
    export = AuditExport.objects.get(pk=export.pk)
    assert export.status == "failed"
    assert "altered" in export.error
    assert not export.file
    assert not export.signature


def test_untouched_parts_join_and_sign(acme, alice, record, make_run, export_now):
    record(acme, make_run())
    export = export_now(acme, alice)
    assert export.status == "done"
    assert export.signature


def _bytes(data: bytes):
    from django.core.files.base import ContentFile

    return ContentFile(data)
