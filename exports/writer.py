"""Writing an export: parts, then the join that makes one verifiable bundle.

A part streams the rows of one section in a primary-key range, redacts them and writes one line
per row (``<type>\\t<canonical JSON>``) to a local temporary file, which is then published whole
to export storage. The join reads the parts back in order, numbers the records, writes the data
file and the index of line hashes, chains them, and builds the signed manifest and the bundle (a
tar with fixed metadata). A single-worker export is one part and the same join: the bytes are
the same however the window is cut.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from runs.commitments import Committer
from runs.redaction import Redactor

from . import verify
from .sections import Section


def write_part(section: Section, window: Any, after: int, upto: int, redactor: Redactor,
               out: IO[bytes], progress: Callable[[int], None] | None = None,
               progress_every: int = 2000, committer: Committer | None = None) -> int:
    """Write the section's rows in (after, upto] to ``out``; return how many. With a
    ``committer`` (a redacted export), hashes are written as its commitments."""
    prefix = section.name.encode() + b"\t"
    written = 0
    for row in section.rows(window, after, upto):
        redacted = section.redact(redactor, row, committer)
        out.write(prefix + orjson.dumps(redacted, option=orjson.OPT_SORT_KEYS) + b"\n")
        written += 1
        if progress is not None and written % progress_every == 0:
            progress(written)
    if progress is not None:
        progress(written)
    return written


@dataclass
class Joined:
    """What the join learned writing the data file and the index."""

    data_name: str
    record_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    head: str = verify.GENESIS
    files: dict[str, dict[str, Any]] = field(default_factory=dict)


class _HashingWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.size += len(data)

    def tell(self) -> int:  # tarfile asks where it starts
        return self.size

    def summary(self) -> dict[str, Any]:
        return {"sha256": self.digest.hexdigest(), "bytes": self.size}


# Lines are written, and hashed into the file checksums, this many at a time.
_FLUSH_LINES = 2000


def join_parts(parts: Iterable[Iterable[bytes]], fmt: str, directory: Path) -> Joined:
    """Concatenate part files (in order) into the data file and index under ``directory``.

    The one pass over every record: its line (numbered here, as the parts are written
    independently), the line's hash, the chain link, and the data and index files with their
    checksums. Lines and hashes are written in batches, the same bytes as one at a time."""
    joined = Joined(verify.DATA_FILES[fmt])
    sha256 = hashlib.sha256
    with (directory / joined.data_name).open("wb", buffering=1 << 20) as data_file, \
            (directory / verify.INDEX).open("wb", buffering=1 << 20) as index_file:
        data, index = _HashingWriter(data_file), _HashingWriter(index_file)
        if fmt == "json":
            data.write(b"[\n")
        head, n = verify.GENESIS, 0
        counts: dict[bytes, int] = {}
        sep = b"\n" if fmt == "jsonl" else b",\n"
        lines: list[bytes] = []
        hashes: list[bytes] = []

        def flush() -> None:
            data.write((sep if n > len(lines) else b"") + sep.join(lines))
            index.write(b"".join(hashes))
            lines.clear()
            hashes.clear()

        for part in parts:
            for raw in part:
                kind, _, body = raw.rstrip(b"\n").partition(b"\t")
                n += 1
                line = b'{"data":' + body + b',"n":' + str(n).encode() + b',"type":"' + \
                    kind + b'"}'
                line_hash = sha256(line).digest()
                # verify.link(head, n, line_hash), inlined: it runs once a record.
                head = sha256(f"{head}:{n}:{line_hash.hex()}".encode()).hexdigest()
                lines.append(line)
                hashes.append(line_hash)
                counts[kind] = counts.get(kind, 0) + 1
                if len(lines) >= _FLUSH_LINES:
                    flush()
        if lines:
            flush()
        if n:
            data.write(b"\n")
        if fmt == "json":
            data.write(b"]\n")
        joined.record_count, joined.head = n, head
        joined.counts = {kind.decode(): count for kind, count in counts.items()}
        joined.files = {joined.data_name: data.summary(), verify.INDEX: index.summary()}
    return joined


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"


def build_bundle(directory: Path, joined: Joined, manifest: bytes, signature: str,
                 target: Path) -> tuple[str, int]:
    """The tar (fixed owner, mode and time: the same inputs give the same bytes); returns its
    SHA-256 and size, hashed as it is written (the bundle is not read back)."""
    members: list[tuple[str, bytes | Path]] = [
        (verify.MANIFEST, manifest), (verify.SIGNATURE, signature.encode() + b"\n"),
        (joined.data_name, directory / joined.data_name),
        (verify.INDEX, directory / verify.INDEX)]
    with target.open("wb", buffering=1 << 20) as handle:
        out = _HashingWriter(handle)
        tar: Any  # (typeshed knows neither a duck-typed fileobj nor copybufsize)
        with tarfile.TarFile(fileobj=cast(Any, out), mode="w",
                             format=tarfile.GNU_FORMAT) as tar:
            tar.copybufsize = 1 << 20  # copy the data file in 1 MB chunks, not 16 KB
            for name, source in members:
                info = tarfile.TarInfo(name)
                info.mode, info.mtime, info.uid, info.gid = 0o644, 0, 0, 0
                if isinstance(source, bytes):
                    info.size = len(source)
                    tar.addfile(info, io.BytesIO(source))
                else:
                    info.size = os.path.getsize(source)
                    with source.open("rb") as member:
                        tar.addfile(info, member)
    return out.digest.hexdigest(), out.size
