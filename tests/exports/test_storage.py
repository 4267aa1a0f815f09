"""Publishing a finished local file: moved into local storage (synced, with the mode a copy
would get), copied when it lies on another file system, read by any other storage."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from django.core.files.storage import InMemoryStorage

from exports.storage import AtomicFileSystemStorage, LocalFile


def test_a_local_file_is_moved_into_local_storage(tmp_path: Path):
    source = tmp_path / "work" / "bundle.tar"
    source.parent.mkdir()
    source.write_bytes(b"x" * 100_000)
    storage = AtomicFileSystemStorage(location=str(tmp_path / "published"))
    with LocalFile(source) as handle:
        name = storage.save("acme/export-1.tar", handle)
    assert name == "acme/export-1.tar"
    assert not source.exists()
    published = Path(storage.path(name))
    assert published.read_bytes() == b"x" * 100_000
    # The mode a copy would have had.
    assert stat.S_IMODE(published.stat().st_mode) == (storage.file_permissions_mode or 0o600)
    assert [p.name for p in published.parent.iterdir()] == ["export-1.tar"]


def test_a_local_file_on_another_file_system_is_copied(tmp_path: Path, monkeypatch):
    source = tmp_path / "part"
    source.write_bytes(b"line\n" * 1000)
    storage = AtomicFileSystemStorage(location=str(tmp_path / "published"))
    real_stat = os.stat

    def other_device(path, *args, **kwargs):
        result = real_stat(path, *args, **kwargs)
        if os.fspath(path) == str(source):
            return os.stat_result((result.st_mode, result.st_ino, result.st_dev + 1,
                                   *tuple(result)[3:]))
        return result

    monkeypatch.setattr(os, "stat", other_device)
    with LocalFile(source) as handle:
        name = storage.save("parts/1/0-1.part", handle)
    monkeypatch.undo()
    assert source.exists()  # copied, not moved
    assert Path(storage.path(name)).read_bytes() == b"line\n" * 1000


def test_any_other_storage_reads_a_local_file(tmp_path: Path):
    source = tmp_path / "bundle.tar"
    source.write_bytes(b"y" * 70_000)
    storage = InMemoryStorage()
    with LocalFile(source) as handle:
        name = storage.save("acme/export-2.tar", handle)
    with storage.open(name, "rb") as stored:
        assert stored.read() == b"y" * 70_000
