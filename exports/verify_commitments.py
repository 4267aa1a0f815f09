"""Offline check of a redacted bundle's commitments, for an auditor given the tenant's
commitment key (``ledger commitment-key``, which needs ``view_unredacted`` and is recorded).

A redacted bundle carries, where the ledger keeps hashes, HMAC-SHA256 commitments under the
key (``runs/commitments.py``). With the key and an unredacted bundle of the same records, each
commitment is recomputed from the unredacted record: the redacted bundle is then shown to be
the same ledger, record for record and field for field, without trusting whoever made it.
Standard library only (``orjson`` when installed, for the exact canonical form of floats).

    ledger verify-export STRICT.tar --commitment-key KEYFILE --unredacted FULL.tar
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .verify import DATA_FILES, MANIFEST, Bundle, Report, record_lines

try:  # the form the portal committed to; plain json differs only in how it prints floats
    import orjson

    def _canonical(value: Any) -> str:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
except ImportError:  # pragma: no cover - the portal always has orjson
    def _canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

# commitment name -> (the unredacted record's column, the label it is committed under): the
# scheme of runs/commitments.py (HASH_FIELDS, _LABELS), restated because this file runs
# without Django; tests/exports/test_commitment_check.py holds the two together.
_COMMITTED = {"record": ("content_hash", "record"), "chain": ("chain_hash", "chain"),
              "head": ("head_hash", "chain"), "found_head": ("found_head", "chain"),
              "signed_head": ("signed_head", "chain"), "action": ("action_hash", "action")}
_IDENTITY = ("id", "run_id", "seq", "call_id", "annotation_id", "step_id")


def read_key(path: str | Path) -> tuple[str, bytes]:
    """A key file as ``ledger commitment-key`` writes it: ``<key id> <secret hex>``."""
    key_id, secret = Path(path).read_text(encoding="utf-8").split()
    return key_id, bytes.fromhex(secret)


def _commit(secret: bytes, label: str, value: str) -> str:
    return hmac.new(secret, f"{label}:{value}".encode(), hashlib.sha256).hexdigest()


def _records(path: Path) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
    bundle = Bundle(path)
    try:
        with bundle.open(MANIFEST) as handle:
            fmt = json.loads(handle.read())["data_format"]
        with bundle.open(DATA_FILES[fmt]) as stream:
            for line, _complete in record_lines(stream, fmt):
                record = json.loads(line)
                data = record["data"]
                yield (record["type"], *(data.get(k) for k in _IDENTITY)), data
    finally:
        bundle.close()


def check_commitments(redacted: str | Path, unredacted: str | Path, key_id: str,
                      secret: bytes, report: Report | None = None) -> Report:
    """Recompute every commitment of ``redacted`` from ``unredacted``; problems name the
    record and the commitment that does not match (kind ``commitment``)."""
    report = report or Report()
    full = dict(_records(Path(unredacted)))
    checked = 0
    for identity, data in _records(Path(redacted)):
        commitment = data.get("commitment")
        if not commitment:
            continue
        where = f"{identity[0]} {'/'.join(str(v) for v in identity[1:] if v is not None)}"
        if commitment.get("key") != key_id:
            report.add("commitment", f"{where} commits under key {commitment.get('key')}, "
                       f"not {key_id}")
            continue
        original = full.get(identity)
        if original is None:
            report.add("commitment", f"{where} is not in the unredacted bundle")
            continue
        for name, (column, label) in _COMMITTED.items():
            if name in commitment and commitment[name] != _commit(
                    secret, label, str(original.get(column))):
                report.add("commitment", f"{where}: its {name} commitment does not match "
                           f"the unredacted record's {column}")
        for field, value in commitment.get("fields", {}).items():
            if value != _commit(secret, f"field:{field}", _canonical(original.get(field))):
                report.add("commitment", f"{where}: field {field} is not what the unredacted "
                           "record holds")
        checked += 1
    report.notes.append(f"{checked} records' commitments checked against the unredacted "
                        f"bundle under key {key_id}")
    return report
