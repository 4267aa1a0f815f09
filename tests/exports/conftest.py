"""Export fixtures: storage and temporary files in the test's own folder, a window around the
generated runs, and exports produced in process (the same steps the Celery tasks take)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from exports.models import AuditExport
from exports.services import produce_now, request_export

WINDOW = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def export_dirs(settings: Any, tmp_path: Path) -> Path:
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "exports.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(tmp_path / "published")}}}
    settings.LEDGER_EXPORT_TMP_DIR = tmp_path / "tmp"
    return tmp_path


@pytest.fixture
def export_now(export_dirs: Path) -> Callable[..., AuditExport]:
    """Request and produce an export in process; returns the finished row."""
    def make(tenant: Any, by: Any, **kwargs: Any) -> AuditExport:
        window = kwargs.pop("window", WINDOW)
        export = request_export(tenant, *window, by=by, enqueue=False, **kwargs)
        return produce_now(export)
    return make


@pytest.fixture
def bundle_of(export_dirs: Path, tmp_path: Path) -> Callable[[AuditExport], Path]:
    """The published bundle of an export, copied out as a downloaded file would be."""
    from exports.storage import export_storage

    def copy(export: AuditExport) -> Path:
        target = tmp_path / f"download-{export.pk}.tar"
        with export_storage().open(export.file, "rb") as source:
            target.write_bytes(source.read())
        return target
    return copy
