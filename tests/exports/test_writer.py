"""The join and the bundle, on their own: batched writes give the same bytes as writing each
record by itself, and the bundle's checksum (taken while it is written) is that of the file."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from exports import verify, writer


def _parts() -> list[list[bytes]]:
    kinds = [b"run", b"step", b"tool_call", b"tool_call", b"annotation"]
    return [[kind + b"\t" + b'{"i":%d,"text":"r%d-%d"}\n' % (i, p, i)
             for i in range(7 * p + 3)] for p, kind in enumerate(kinds)]


def _reference(parts: list[list[bytes]], fmt: str) -> tuple[bytes, bytes, str, dict[str, int]]:
    """One record at a time, as the verifier reads them."""
    lines: list[bytes] = []
    hashes: list[bytes] = []
    head, counts = verify.GENESIS, dict[str, int]()
    for part in parts:
        for raw in part:
            kind, _, body = raw.rstrip(b"\n").partition(b"\t")
            line = b'{"data":' + body + b',"n":%d,"type":"' % (len(lines) + 1) + kind + b'"}'
            lines.append(line)
            hashes.append(hashlib.sha256(line).digest())
            head = verify.link(head, len(lines), hashes[-1])
            counts[kind.decode()] = counts.get(kind.decode(), 0) + 1
    if fmt == "jsonl":
        data = b"".join(line + b"\n" for line in lines)
    else:
        data = b"[\n" + b",\n".join(lines) + (b"\n" if lines else b"") + b"]\n"
    return data, b"".join(hashes), head, counts


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
@pytest.mark.parametrize("flush_lines", [1, 4, 2000])
def test_the_join_writes_the_same_bytes_however_it_batches(tmp_path: Path, monkeypatch, fmt,
                                                           flush_lines):
    monkeypatch.setattr(writer, "_FLUSH_LINES", flush_lines)
    parts = _parts()
    joined = writer.join_parts((io.BytesIO(b"".join(p)) for p in parts), fmt, tmp_path)
    data, index, head, counts = _reference(parts, fmt)
    assert (tmp_path / joined.data_name).read_bytes() == data
    assert (tmp_path / verify.INDEX).read_bytes() == index
    assert joined.head == head
    assert joined.counts == counts
    assert joined.record_count == sum(map(len, parts))
    assert joined.files[joined.data_name] == {"sha256": hashlib.sha256(data).hexdigest(),
                                              "bytes": len(data)}
    assert joined.files[verify.INDEX] == {"sha256": hashlib.sha256(index).hexdigest(),
                                          "bytes": len(index)}
    # Each record's line is found again by the verifier's reader, in order.
    with (tmp_path / joined.data_name).open("rb") as handle:
        read = [line for line, complete in verify.record_lines(handle, fmt)]
    assert [hashlib.sha256(line).digest() for line in read] == [
        index[i:i + 32] for i in range(0, len(index), 32)]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_an_empty_join(tmp_path: Path, fmt):
    joined = writer.join_parts([], fmt, tmp_path)
    assert (tmp_path / joined.data_name).read_bytes() == _reference([], fmt)[0]
    assert joined.record_count == 0
    assert joined.head == verify.GENESIS


def test_the_bundle_checksum_is_that_of_the_file_written(tmp_path: Path):
    parts = _parts()
    joined = writer.join_parts((io.BytesIO(b"".join(p)) for p in parts), "jsonl", tmp_path)
    target = tmp_path / "bundle.tar"
    sha256, size = writer.build_bundle(tmp_path, joined, b'{"m":1}\n', "c2ln", target)
    body = target.read_bytes()
    assert (sha256, size) == (hashlib.sha256(body).hexdigest(), len(body))
    with tarfile.open(target) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert list(members) == [verify.MANIFEST, verify.SIGNATURE, joined.data_name,
                                 verify.INDEX]
        assert all((m.mode, m.mtime, m.uid, m.gid) == (0o644, 0, 0, 0)
                   for m in members.values())
        data = tar.extractfile(joined.data_name)
        assert data is not None
        assert data.read() == (tmp_path / joined.data_name).read_bytes()
    # The same inputs give the same bytes.
    again = tmp_path / "again.tar"
    assert writer.build_bundle(tmp_path, joined, b'{"m":1}\n', "c2ln", again) == (sha256, size)
    assert again.read_bytes() == body
