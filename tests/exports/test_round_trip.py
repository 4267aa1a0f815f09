"""An export made with ``ledger export`` verifies offline with ``ledger verify-export``; every
kind of tampering fails it (exit 4) and is named."""

from __future__ import annotations

import base64
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core import signing
from core.cli_support import EXIT_OK, EXIT_TAMPERED
from exports.verify import EXIT_UNVERIFIED
from ledger_portal.cli import main

DATA = "records.jsonl"


@pytest.fixture
def exported(acme, alice, record, make_run, export_dirs, tmp_path, capsys) -> Path:
    record(acme, *[make_run() for _ in range(3)])
    bundle = tmp_path / "acme.tar"
    assert main(["--as", "alice", "export", "--tenant", "acme", "--from",
                 "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z",
                 "-o", str(bundle)]) == EXIT_OK
    assert "records" in capsys.readouterr().out
    return bundle


@pytest.fixture
def unpacked(exported, tmp_path) -> Path:
    directory = tmp_path / "unpacked"
    with tarfile.open(exported) as tar:
        tar.extractall(directory, filter="data")
    return directory


def verify(path: Path, capsys, *extra: str) -> tuple[int, str]:
    """``ledger verify-export`` with the portal's key pinned, unless ``extra`` pins otherwise."""
    pin = [] if extra else ["--public-key", signing.public_key_b64()]
    code = main(["verify-export", str(path), *pin, *extra])
    return code, capsys.readouterr().out


def verify_unpinned(path: Path, capsys) -> tuple[int, str]:
    code = main(["verify-export", str(path)])
    return code, capsys.readouterr().out


def lines_of(directory: Path) -> list[bytes]:
    return (directory / DATA).read_bytes().splitlines(keepends=True)


def rewrite(directory: Path, lines: list[bytes]) -> None:
    (directory / DATA).write_bytes(b"".join(lines))


def test_an_export_verifies_offline_with_the_published_key(exported, capsys):
    code, out = verify(exported, capsys, "--public-key", signing.public_key_b64())
    assert code == EXIT_OK, out
    assert "OK: signature, checksums and record chain verified" in out
    assert "pin the portal's key" not in out


def test_without_a_pinned_key_it_never_says_ok(exported, capsys):
    code, out = verify_unpinned(exported, capsys)
    assert code == EXIT_UNVERIFIED
    assert "OK:" not in out
    assert "UNVERIFIED SIGNER" in out
    assert "--public-key" in out


def test_the_key_can_be_pinned_by_its_fingerprint_or_a_trust_file(exported, capsys, tmp_path,
                                                                   monkeypatch):
    key = signing.public_key_b64()
    assert verify(exported, capsys, "--key-id", signing.key_id(key))[0] == EXIT_OK
    assert verify(exported, capsys, "--key-id", "0123456789abcdef")[0] == EXIT_UNVERIFIED
    trusted = tmp_path / "trusted-keys"
    trusted.write_text(f"# the portal of acme\n{key}\n")
    assert verify(exported, capsys, "--trusted-keys", str(trusted))[0] == EXIT_OK
    monkeypatch.setenv("LEDGER_TRUSTED_KEYS_FILE", str(trusted))
    code, out = verify_unpinned(exported, capsys)
    assert code == EXIT_OK, out
    assert "signed by trusted key" in out


def test_the_unpacked_directory_verifies_too(unpacked, capsys):
    assert verify(unpacked, capsys)[0] == EXIT_OK


def test_a_modified_record_is_named(unpacked, capsys):
    lines = lines_of(unpacked)
    lines[4] = lines[4].replace(b'"data":{', b'"data":{"forged":true,', 1)
    rewrite(unpacked, lines)
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "modified: record 5 (line 5) was changed" in out
    assert "checksum: records.jsonl" in out


def test_a_deleted_record_is_named(unpacked, capsys):
    lines = lines_of(unpacked)
    del lines[6]
    rewrite(unpacked, lines)
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "missing: 1 record(s) deleted: 7" in out


def test_reordered_records_are_named(unpacked, capsys):
    lines = lines_of(unpacked)
    lines[2], lines[3] = lines[3], lines[2]
    rewrite(unpacked, lines)
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "reordered: record 3 comes after record 4" in out
    assert "modified" not in out
    assert "missing" not in out


def test_a_truncated_file_is_named(unpacked, capsys):
    data = (unpacked / DATA).read_bytes()
    cut = len(data) - len(lines_of(unpacked)[-1]) - 40  # into the second-last record
    (unpacked / DATA).write_bytes(data[:cut])
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "truncated: the last line" in out
    total = len(lines_of(unpacked)) + 1
    assert f"truncated: the file ends after record {total - 2} of {total}" in out


def test_an_inserted_record_is_named(unpacked, capsys):
    lines = lines_of(unpacked)
    lines.insert(3, lines[8])  # a copy of a genuine record, out of place
    lines.insert(5, b'{"data":{"goal":"nothing to see"},"n":42,"type":"run"}\n')
    rewrite(unpacked, lines)
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "inserted: line 4 claims to be record 9, which is at line 11" in out
    assert "inserted: line 6" in out


def test_an_edited_manifest_fails_its_signature(unpacked, capsys):
    manifest = unpacked / "manifest.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"redaction_level": "strict"',
                                                       b'"redaction_level": "none"'))
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "signature: the signature of manifest.json does not verify" in out


def _other_key() -> str:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def test_a_bundle_checked_against_another_key_fails(exported, capsys):
    code, out = verify(exported, capsys, "--public-key", _other_key())
    assert code == EXIT_TAMPERED
    assert "wrong-key: the manifest names signing key" in out
    assert "signature:" in out


def test_a_bundle_re_signed_by_someone_else_fails_against_the_pinned_key(unpacked, capsys):
    forger = Ed25519PrivateKey.generate()
    public = base64.b64encode(forger.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    manifest = unpacked / "manifest.json"
    forged = manifest.read_bytes().replace(signing.public_key_b64().encode(), public.encode())
    manifest.write_bytes(forged)
    (unpacked / "manifest.sig").write_bytes(base64.b64encode(forger.sign(forged)) + b"\n")
    code, out = verify_unpinned(unpacked, capsys)  # whole, but by whom? never a silent OK
    assert code == EXIT_UNVERIFIED
    assert "OK:" not in out
    code, out = verify(unpacked, capsys, "--public-key", signing.public_key_b64())
    assert code == EXIT_TAMPERED
    assert "wrong-key" in out
    assert verify(unpacked, capsys, "--key-id", signing.key_id(signing.public_key_b64()))[0] \
        == EXIT_UNVERIFIED


def test_a_missing_file_is_named(unpacked, capsys):
    (unpacked / "records.idx").unlink()
    code, out = verify(unpacked, capsys)
    assert code == EXIT_TAMPERED
    assert "missing-file: the bundle has no records.idx" in out


def test_the_verifier_needs_neither_django_nor_the_database(exported):
    import subprocess
    import sys

    script = ("import sys; from exports.verify import main; code = main(sys.argv[1:]); "
              "assert 'django' not in sys.modules, 'django was imported'; sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script, str(exported), "--public-key",
                           signing.public_key_b64()], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parents[2],
                          env={"PATH": "/usr/bin:/bin"}, check=False)
    assert done.returncode == EXIT_OK, done.stderr + done.stdout
    assert "OK" in done.stdout


# -- the json format: one JSON array, a record a line -----------------------------------------

@pytest.fixture
def exported_json(acme, alice, record, make_run, export_dirs, tmp_path, capsys) -> Path:
    record(acme, *[make_run() for _ in range(3)])
    bundle = tmp_path / "acme-json.tar"
    assert main(["--as", "alice", "export", "--tenant", "acme", "--from",
                 "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z", "--format", "json",
                 "-o", str(bundle)]) == EXIT_OK
    capsys.readouterr()
    return bundle


def _unpack(bundle: Path, directory: Path) -> Path:
    with tarfile.open(bundle) as tar:
        tar.extractall(directory, filter="data")
    return directory


def _repack(directory: Path, bundle: Path) -> Path:
    """The bundle as a tar again, with the same members in the same order."""
    with tarfile.open(bundle, "w") as tar:
        for name in ("manifest.json", "manifest.sig", "records.json", "records.idx"):
            tar.add(directory / name, arcname=name)
    return bundle


def test_a_json_export_is_a_json_array_and_verifies_offline(exported_json, tmp_path, capsys):
    import json

    directory = _unpack(exported_json, tmp_path / "json")
    assert sorted(p.name for p in directory.iterdir()) == [
        "manifest.json", "manifest.sig", "records.idx", "records.json"]
    manifest = json.loads((directory / "manifest.json").read_bytes())
    assert manifest["data_format"] == "json"
    records = json.loads((directory / "records.json").read_bytes())  # one parse, the whole file
    assert [r["n"] for r in records] == list(range(1, manifest["record_count"] + 1))
    assert {r["type"] for r in records} >= {"run", "step", "tool_call"}
    code, out = verify(exported_json, capsys, "--public-key", signing.public_key_b64())
    assert code == EXIT_OK, out
    assert "OK: signature, checksums and record chain verified" in out
    assert verify(directory, capsys)[0] == EXIT_OK


def test_a_tampered_json_bundle_fails_and_says_how(exported_json, tmp_path, capsys):
    directory = _unpack(exported_json, tmp_path / "json")
    data = directory / "records.json"
    lines = data.read_bytes().splitlines(keepends=True)
    assert lines[0] == b"[\n"
    assert lines[-1] == b"]\n"
    assert lines[3].endswith(b",\n")
    lines[3] = lines[3].replace(b'"data":{', b'"data":{"forged":true,', 1)
    data.write_bytes(b"".join(lines))
    tampered = _repack(directory, tmp_path / "tampered.tar")
    code, out = verify(tampered, capsys)
    assert code == EXIT_TAMPERED
    assert "modified: record 3 (line 3) was changed" in out
    assert "checksum: records.json" in out

    del lines[3]  # the forged record, gone altogether
    data.write_bytes(b"".join(lines))
    code, out = verify(_repack(directory, tmp_path / "deleted.tar"), capsys)
    assert code == EXIT_TAMPERED
    assert "missing: 1 record(s) deleted: 3" in out

    # Cut in the middle of the array: the last record is cut off and the closing ] is gone.
    original = (_unpack(exported_json, tmp_path / "again") / "records.json").read_bytes()
    data.write_bytes(original[:len(original) // 2])
    code, out = verify(_repack(directory, tmp_path / "truncated.tar"), capsys)
    assert code == EXIT_TAMPERED
    assert "truncated:" in out
