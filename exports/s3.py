"""The exports storage in an S3 bucket (``LEDGER_EXPORT_STORAGE=s3``): django-storages' S3
storage, whose objects are read as a stream. Imported only when configured, so the portal runs
without the ``s3`` extra."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from django.core.files import File
from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class StreamingS3Storage(S3Storage):  # type: ignore[misc]
    """django-storages opens an object by first copying all of it into memory (its ``S3File``,
    with ``AWS_S3_MAX_MEMORY_SIZE`` 0, never spills to disk): a bundle of gigabytes would sit
    whole in a web worker before its first byte left, and each part whole in the joiner. Opened
    here for reading, an object comes from the bucket as it is consumed; writing is unchanged."""

    def _open(self, name: str, mode: str = "rb") -> Any:
        if mode != "rb":
            return super()._open(name, mode)
        key = self._normalize_name(clean_name(name))
        try:
            answer = self.bucket.Object(key).get()
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                raise FileNotFoundError(f"{name} is not in the bucket") from exc
            raise
        stream = File(answer["Body"], name=name)
        stream.size = answer["ContentLength"]
        return stream
