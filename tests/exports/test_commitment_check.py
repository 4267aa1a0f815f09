"""An auditor given the commitment key checks a strict bundle against an unredacted one,
offline: every commitment is recomputed from the unredacted record. Getting the key needs
view_unredacted and is recorded; rotating it needs manage_policies."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import orjson
import pytest

from core import signing
from core.cli_support import EXIT_FORBIDDEN, EXIT_OK
from exports.verify import EXIT_FAILED
from exports.verify import main as verify_main
from exports.verify_commitments import check_commitments, read_key
from ledger_portal.cli import main
from runs.models import Annotation

from ..runs.test_redacted_outputs_hide_hashes import CARD, card_run  # noqa: F401 (fixture)
from .conftest import WINDOW


@pytest.fixture
def bundles(acme, alice, card_run, export_now, bundle_of):  # noqa: F811
    strict = bundle_of(export_now(acme, alice, window=WINDOW))
    full = bundle_of(export_now(acme, alice, window=WINDOW, redaction_level="none",
                                justification="audit AUD-7"))
    return strict, full


def _key_file(tmp_path: Path, capsys) -> Path:
    path = tmp_path / "acme.key"
    assert main(["--as", "alice", "commitment-key", "--tenant", "acme", "-o",
                 str(path)]) == EXIT_OK
    capsys.readouterr()
    return path


def _verify(strict: Path, full: Path, key: Path) -> int:
    return verify_main([str(strict), "--public-key", signing.public_key_b64(),
                        "--commitment-key", str(key), "--unredacted", str(full)])


def test_the_key_holder_matches_every_commitment_of_a_strict_bundle(acme, bundles, tmp_path,
                                                                     capsys):
    strict, full = bundles
    key = _key_file(tmp_path, capsys)
    assert os.stat(key).st_mode & 0o777 == 0o600
    assert _verify(strict, full, key) == EXIT_OK
    out = capsys.readouterr().out
    assert "commitments match the unredacted bundle" in out
    assert Annotation.objects.filter(tenant=acme, data__event="commitment_key_disclosed"
                                     ).count() == 1


def _rewrite(bundle: Path, target: Path, edit) -> Path:
    """The bundle with its records edited and re-signed as a forger with the portal's own
    signing key would: only the commitments can tell."""
    with tarfile.open(bundle) as tar:
        files = {m.name: _read(tar, m) for m in tar.getmembers() if m.isfile()}
    lines = [orjson.loads(line) for line in files["records.jsonl"].splitlines()]
    for record in lines:
        edit(record)
    target.mkdir()
    for name, data in files.items():
        (target / name).write_bytes(data)
    (target / "records.jsonl").write_bytes(b"".join(
        orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in lines))
    return target


def test_a_commitment_that_does_not_match_is_named(bundles, tmp_path, capsys):
    strict, full = bundles
    key = _key_file(tmp_path, capsys)

    def swap_card(record):
        if record["type"] == "tool_call":
            record["data"]["input"]["card"] = "4111 1111 1111 1111"

    edited = _rewrite(full, tmp_path / "edited", swap_card)
    # The CLI refuses it on its checksums already; the commitments name the field themselves.
    assert _verify(strict, edited, key) == EXIT_FAILED
    assert "checksum" in capsys.readouterr().out
    problems = [str(p) for p in check_commitments(strict, edited, *read_key(key)).problems]
    assert problems == ["commitment: tool_call card-run/3/t1/s1: field input is not what the "
                        "unredacted record holds"]


def test_the_wrong_key_is_refused(acme, alice, bundles, tmp_path, capsys):
    strict, full = bundles
    from runs.commitments import rotate_commitment_key

    rotate_commitment_key(acme, by=alice)
    key = _key_file(tmp_path, capsys)  # the new key; the strict bundle used the old one
    assert _verify(strict, full, key) == EXIT_FAILED
    assert "commits under key 1:" in capsys.readouterr().out
    old = tmp_path / "old.key"
    assert main(["--as", "alice", "commitment-key", "--tenant", "acme", "--generation", "1",
                 "-o", str(old)]) == EXIT_OK
    assert _verify(strict, full, old) == EXIT_OK


def test_the_key_needs_view_unredacted_and_rotation_manage_policies(acme, bob, capsys):
    assert main(["--as", "bob", "commitment-key", "--tenant", "acme"]) == EXIT_FORBIDDEN
    assert "view_unredacted" in capsys.readouterr().err
    assert main(["--as", "bob", "commitment-key", "--tenant", "acme", "--rotate"]
                ) == EXIT_FORBIDDEN
    assert not Annotation.objects.filter(data__event__startswith="commitment_key").exists()


def test_a_strict_bundle_holds_no_card_digits(bundles):
    strict, _ = bundles
    with tarfile.open(strict) as tar:
        text = _read(tar, "records.jsonl").decode()
    assert CARD not in text
    assert CARD.replace(" ", "") not in text


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo | str) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None
    return handle.read()
