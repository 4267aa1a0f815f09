"""Where bundles are published: the ``exports`` entry of ``STORAGES``.

Local files under the data folder by default (``AtomicFileSystemStorage``); an S3 bucket with
``LEDGER_EXPORT_STORAGE=s3`` (``exports.s3.StreamingS3Storage``); or any Django storage backend
named by its dotted path, whose uploads appear whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages


def export_storage() -> Storage:
    return storages["exports"]


class LocalFile(File[bytes]):
    """A finished local file to publish, handed over as Django hands over a temporary upload:
    a storage that can take it whole (below) moves it in instead of copying it, any other
    storage reads it as usual, and either may remove it afterwards."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        super().__init__(open(self.path, "rb"), name=os.path.basename(self.path))  # noqa: SIM115

    def temporary_file_path(self) -> str:
        return self.path


class AtomicFileSystemStorage(FileSystemStorage):
    """A file appears under its name only once it is complete: it is written to a temporary
    file in the same directory and renamed (``FileSystemStorage`` writes in place, so a reader
    or a killed writer could see half a file). A :class:`LocalFile` on the same file system is
    flushed to disk and renamed into place, not copied."""

    def _save(self, name: str, content: Any) -> str:
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        os.makedirs(directory, exist_ok=True)
        if isinstance(content, LocalFile) and self._move(content.path, full_path):
            return str(name).replace("\\", "/")
        fd, temp_path = tempfile.mkstemp(dir=directory, prefix=".partial-")
        try:
            with os.fdopen(fd, "wb") as handle:
                for chunk in content.chunks():
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(temp_path, self.file_permissions_mode)
            os.replace(temp_path, full_path)
        except BaseException:
            if os.path.exists(temp_path):
                os.unlink(temp_path)
            raise
        return str(name).replace("\\", "/")

    def _move(self, source: str, full_path: str) -> bool:
        """Rename ``source`` to ``full_path`` (same file system only), synced and with the mode
        a copy would have had; False when it cannot be renamed there."""
        if os.stat(source).st_dev != os.stat(os.path.dirname(full_path)).st_dev:
            return False
        fd = os.open(source, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        # The mode a copy gets: FILE_UPLOAD_PERMISSIONS, or mkstemp's.
        os.chmod(source, self.file_permissions_mode if self.file_permissions_mode is not None
                 else 0o600)
        os.replace(source, full_path)
        return True
