"""Where bundles are published: the ``exports`` entry of ``STORAGES``.

Local files under the data folder by default (``AtomicFileSystemStorage``); any Django storage
backend otherwise (``LEDGER_EXPORT_STORAGE=storages.backends.s3.S3Storage`` with
django-storages and its own ``AWS_*`` settings), whose uploads appear whole or not at all.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from django.core.files.storage import FileSystemStorage, Storage, storages


def export_storage() -> Storage:
    return storages["exports"]


class AtomicFileSystemStorage(FileSystemStorage):
    """A file appears under its name only once it is complete: it is written to a temporary
    file in the same directory and renamed (``FileSystemStorage`` writes in place, so a reader
    or a killed writer could see half a file)."""

    def _save(self, name: str, content: Any) -> str:
        full_path = self.path(name)
        directory = os.path.dirname(full_path)
        os.makedirs(directory, exist_ok=True)
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
