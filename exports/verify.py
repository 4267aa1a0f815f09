"""Offline verification of an export bundle: Python's standard library and ``cryptography``
only, no Django, no database, no portal settings (``python -m exports.verify BUNDLE`` or
``ledger verify-export BUNDLE``).

A bundle is a tar (or the directory it unpacks to) holding:

- ``records.jsonl`` (or ``records.json``, a JSON array with one record a line): one record a
  line, ``{"data": {...}, "n": <1-based position>, "type": "<record type>"}``, canonical JSON;
- ``records.idx``: the SHA-256 of each record line (without its newline or trailing comma), 32
  raw bytes a record, in order;
- ``manifest.json``: tenant, window, redaction level, counts by type, the SHA-256 and size of
  both files, the head of the record chain (``link(n) = sha256("{link(n-1)}:{n}:{line hash}")``
  from 64 zeros), the policy versions and approval records, the previous export's signature and
  the signing public key;
- ``manifest.sig``: the Ed25519 signature (base64) of the exact bytes of ``manifest.json``.

The verifier checks the signature, then both files' checksums, then every record against the
index and the chain, and names what is wrong: a modified, missing, reordered, inserted or
truncated record, an edited manifest, a wrong key or a bad signature.

The signer must be pinned: ``--public-key`` (the key the portal publishes at
``/api/v1/signing-key/``), ``--key-id`` (its fingerprint) or a ``--trusted-keys`` file (one key
or key id a line; ``LEDGER_TRUSTED_KEYS_FILE`` by default). The key embedded in the manifest
only proves the bundle is whole, not who made it: anyone can re-sign a forgery with a key of
their own. Without a pin the verifier still checks everything, but never says OK: it reports an
unverified signer and exits 5.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import tarfile
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "ledger-portal-export/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
INDEX = "records.idx"
DATA_FILES = {"jsonl": "records.jsonl", "json": "records.json"}
GENESIS = "0" * 64
DIGEST_SIZE = 32
# Manifest fields that differ between two exports of the same tenant, window and ledger state;
# everything else (and every data byte) is the same.
VOLATILE_MANIFEST_FIELDS = ("export_id", "generated_at", "previous_export")
EXIT_OK, EXIT_FAILED, EXIT_UNVERIFIED = 0, 4, 5
TRUSTED_KEYS_ENV = "LEDGER_TRUSTED_KEYS_FILE"


def link(previous: str, n: int, line_hash: bytes) -> str:
    """The chain link of record ``n``: it commits to every record before it."""
    return hashlib.sha256(f"{previous}:{n}:{line_hash.hex()}".encode()).hexdigest()


def key_id(public_b64: str) -> str:
    return hashlib.sha256(base64.b64decode(public_b64)).hexdigest()[:16]


def record_lines(stream: IO[bytes], fmt: str) -> Iterator[tuple[bytes, bool]]:
    """Each record's bytes, and whether its line was complete (a cut-off last line is not)."""
    for raw in stream:
        complete = raw.endswith(b"\n")
        line = raw[:-1] if complete else raw
        if fmt == "json":
            if line in (b"[", b"]"):
                continue
            if line.endswith(b","):
                line = line[:-1]
        if line:
            yield line, complete


@dataclass
class Problem:
    kind: str  # signature | wrong-key | unverified-signer | manifest | missing-file |
    #            checksum | modified | missing | reordered | inserted | truncated | chain |
    #            commitment
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass
class Report:
    manifest: dict[str, Any] = field(default_factory=dict)
    records: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def only_unpinned(self) -> bool:
        """Whole and consistent, but nobody vouched for the signer."""
        return bool(self.problems) and all(p.kind == "unverified-signer"
                                           for p in self.problems)

    def add(self, kind: str, detail: str) -> None:
        self.problems.append(Problem(kind, detail))


class Bundle:
    """The files of a bundle, from a tar or a directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar = tarfile.open(path) if path.is_file() else None  # noqa: SIM115

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()

    def names(self) -> set[str]:
        if self._tar is not None:
            return {m.name for m in self._tar.getmembers() if m.isfile()}
        return {p.name for p in self.path.iterdir() if p.is_file()}

    def open(self, name: str) -> IO[bytes]:
        if self._tar is not None:
            member = self._tar.extractfile(name)
            if member is None:
                raise FileNotFoundError(name)
            return member
        return (self.path / name).open("rb", buffering=1 << 20)


def _file_digest(bundle: Bundle, name: str) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with bundle.open(name) as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class Trust:
    """Whose signature the verifier accepts: a pinned key, or keys / key ids trusted by name."""

    public_key: str | None = None
    keys: frozenset[str] = frozenset()
    key_ids: frozenset[str] = frozenset()

    @classmethod
    def from_file(cls, path: str | Path, public_key: str | None = None,
                  key_ids: tuple[str, ...] = ()) -> Trust:
        keys: set[str] = set()
        ids = set(key_ids)
        for raw in Path(path).read_text(encoding="utf-8").splitlines():
            entry = raw.split("#", 1)[0].strip()
            if entry:
                (ids if len(entry) == 16 and all(c in "0123456789abcdef" for c in entry)
                 else keys).add(entry)
        return cls(public_key, frozenset(keys), frozenset(ids))

    def vouches_for(self, embedded: str) -> bool:
        return embedded in self.keys or _safe_key_id(embedded) in self.key_ids


def verify_bundle(path: str | Path, public_key: str | None = None,
                  trust: Trust | None = None) -> Report:
    """Check a bundle; the report lists every problem found (none: intact and its signer
    pinned by ``public_key`` or ``trust``)."""
    trust = trust or Trust(public_key)
    report = Report()
    path = Path(path)
    if not path.exists():
        report.add("missing-file", f"{path} does not exist")
        return report
    try:
        bundle = Bundle(path)
    except tarfile.TarError as exc:
        report.add("missing-file", f"{path} is neither a directory nor a tar: {exc}")
        return report
    try:
        _verify(bundle, trust, report)
    finally:
        bundle.close()
    return report


def _verify(bundle: Bundle, trust: Trust, report: Report) -> None:
    names = bundle.names()
    for required in (MANIFEST, SIGNATURE):
        if required not in names:
            report.add("missing-file", f"the bundle has no {required}")
    if report.problems:
        return
    with bundle.open(MANIFEST) as handle:
        manifest_bytes = handle.read()
    with bundle.open(SIGNATURE) as handle:
        signature = handle.read().strip()
    try:
        manifest = json.loads(manifest_bytes)
    except ValueError as exc:
        report.add("manifest", f"manifest.json is not JSON (edited?): {exc}")
        return
    report.manifest = manifest
    _check_signature(manifest, manifest_bytes, signature, trust, report)
    if manifest.get("format") != FORMAT:
        report.add("manifest", f"unknown format {manifest.get('format')!r}")
        return
    files = manifest.get("files", {})
    data_name = DATA_FILES.get(manifest.get("data_format", ""), "")
    for name in (data_name, INDEX):
        if name not in files:
            report.add("manifest", f"the manifest lists no {name or 'data file'}")
        elif name not in names:
            report.add("missing-file", f"the bundle has no {name}")
    if report.problems and not all(p.kind in ("signature", "wrong-key", "unverified-signer")
                                   for p in report.problems):
        return
    sound = {}
    for name in (data_name, INDEX):
        digest, size = _file_digest(bundle, name)
        expected = files[name]
        sound[name] = digest == expected["sha256"] and size == expected["bytes"]
        if not sound[name]:
            report.add("checksum", f"{name}: SHA-256 {digest[:16]}... ({size} bytes) differs "
                       f"from the manifest's {expected['sha256'][:16]}... "
                       f"({expected['bytes']} bytes)")
    index = _read_index(bundle, report)
    if index is None:
        return
    _check_chain(index, manifest, sound[INDEX], report)
    _check_records(bundle, data_name, manifest, index, report)


def _check_signature(manifest: dict[str, Any], manifest_bytes: bytes, signature: bytes,
                     trust: Trust, report: Report) -> None:
    embedded = str(manifest.get("signing", {}).get("public_key", ""))
    pinned = trust.public_key
    key = pinned or embedded
    if pinned is None and trust.vouches_for(embedded):
        report.notes.append(f"signed by trusted key {_safe_key_id(embedded)}")
    elif pinned is None:
        report.add("unverified-signer", f"signed by key {_safe_key_id(embedded)}, which "
                   "nothing pins: the bundle may be whole, but anyone can re-sign a forgery. "
                   "Pin the portal's key with --public-key, --key-id or --trusted-keys "
                   "(GET /api/v1/signing-key/)")
    elif pinned != embedded:
        report.add("wrong-key", f"the manifest names signing key {_safe_key_id(embedded)}, "
                   f"not the pinned key {_safe_key_id(pinned)}")
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key))
        public.verify(base64.b64decode(signature), manifest_bytes)
    except (InvalidSignature, ValueError) as exc:
        whose = "the pinned key" if pinned else "the key in the manifest"
        report.add("signature", f"the signature of manifest.json does not verify with {whose} "
                   f"(the manifest was edited, or signed with another key){_reason(exc)}")


def _reason(exc: Exception) -> str:
    return f": {exc}" if str(exc) else ""


def _safe_key_id(public_b64: str) -> str:
    try:
        return key_id(public_b64)
    except ValueError:
        return repr(public_b64[:12])


def _read_index(bundle: Bundle, report: Report) -> bytes | None:
    with bundle.open(INDEX) as handle:
        index = handle.read()
    if len(index) % DIGEST_SIZE:
        report.add("checksum", f"{INDEX} is not a whole number of {DIGEST_SIZE}-byte hashes")
        return None
    return index


def _check_chain(index: bytes, manifest: dict[str, Any], index_sound: bool,
                 report: Report) -> None:
    expected_count = manifest.get("record_count")
    count = len(index) // DIGEST_SIZE
    head = GENESIS
    for n in range(1, count + 1):
        head = link(head, n, index[(n - 1) * DIGEST_SIZE:n * DIGEST_SIZE])
    if count != expected_count or head != manifest.get("chain", {}).get("head"):
        detail = "the record index does not chain to the manifest's head"
        if not index_sound:
            detail += f" ({INDEX} was changed)"
        report.add("chain", detail)


def _check_records(bundle: Bundle, data_name: str, manifest: dict[str, Any], index: bytes,
                   report: Report) -> None:
    """Every line against the index: each line names its position ``n``; a line is record n
    when its hash is the index's n-th. Then what is out of place, missing or extra is named."""
    expected = len(index) // DIGEST_SIZE
    fmt = manifest.get("data_format", "jsonl")
    at = array("q", bytes(8 * (expected + 1)))  # n -> physical line (1-based), 0: not seen
    counts: dict[str, int] = {}
    strangers: list[tuple[int, int | None, bool]] = []  # (line, claimed n, complete)
    authentic_order: list[int] = []
    copies: dict[int, list[int]] = {}  # n -> further lines carrying record n
    positions: dict[int, int] = {}
    cut_off = False
    line_no = 0
    with bundle.open(data_name) as handle:
        for line, complete in record_lines(handle, fmt):
            line_no += 1
            cut_off = cut_off or not complete
            n = _claimed_position(line)
            digest = hashlib.sha256(line).digest()
            genuine = n is not None and 1 <= n <= expected and \
                index[(n - 1) * DIGEST_SIZE:n * DIGEST_SIZE] == digest
            if genuine and n is not None and at[n] == 0:
                at[n] = line_no
                authentic_order.append(n)
                kind = _record_type(line)
                counts[kind] = counts.get(kind, 0) + 1
            elif genuine and n is not None:
                copies.setdefault(n, []).append(line_no)
            else:
                strangers.append((line_no, n, complete))
    report.records = line_no
    for n, lines in copies.items():
        # Of several copies of a record, the one between its neighbours is in place.
        candidates = [at[n], *lines]
        low = at[n - 1] if n > 1 else 0
        high = at[n + 1] if n < expected and at[n + 1] else line_no + 1
        fitting = [c for c in candidates if low < c < high]
        keep = fitting[0] if fitting else candidates[0]
        if keep != at[n]:
            authentic_order[authentic_order.index(n)] = -1
            authentic_order.append(n)  # re-sorted below by line
            positions[n] = keep
        at[n] = keep
        strangers += [(c, n, True) for c in candidates if c != keep]
    if positions:
        by_line = sorted((at[n], n) for n in authentic_order if n > 0)
        authentic_order = [n for _, n in by_line]
    modified: set[int] = set()
    for where, n, complete in sorted(strangers):
        if not complete:
            report.add("truncated", f"the last line ({where}) is cut off mid-record")
        elif n is not None and 1 <= n <= expected and at[n] != 0:
            report.add("inserted", f"line {where} claims to be record {n}, which is at line "
                       f"{at[n]}")
        elif n is not None and 1 <= n <= expected and n not in modified:
            modified.add(n)
            report.add("modified", f"record {n} (line {where}) was changed")
        else:
            report.add("inserted", f"line {where} is not a record of this export")
    _name_missing(at, expected, strangers, cut_off, report)
    _name_reordered(authentic_order, report)
    if not report.problems and counts != manifest.get("records", {}):
        report.add("manifest", f"records by type {counts} differ from the manifest's "
                   f"{manifest.get('records')}")


def _name_missing(at: array[int], expected: int, strangers: list[tuple[int, int | None, bool]],
                  cut_off: bool, report: Report) -> None:
    changed = {n for _, n, complete in strangers if n is not None and complete}
    missing = [n for n in range(1, expected + 1) if at[n] == 0 and n not in changed]
    if not missing:
        return
    last_present = max((n for n in range(1, expected + 1) if at[n]), default=0)
    tail = missing[0] > last_present and missing == list(range(missing[0], expected + 1))
    if tail:
        report.add("truncated", f"the file ends after record {missing[0] - 1} of {expected}"
                   f"{' (its last line cut off)' if cut_off else ''}: {len(missing)} "
                   "record(s) missing from the end")
        return
    shown = ", ".join(str(n) for n in missing[:10]) + (" ..." if len(missing) > 10 else "")
    report.add("missing", f"{len(missing)} record(s) deleted: {shown}")


def _name_reordered(order: list[int], report: Report) -> None:
    previous = 0
    for position, n in enumerate(order):
        if n < previous:
            report.add("reordered", f"record {n} comes after record {previous} (records are "
                       f"out of order from line {position + 1})")
            return
        previous = n


_N_MARK = b',"n":'


def _claimed_position(line: bytes) -> int | None:
    """The ``n`` a line claims, read from its canonical tail ``,"n":<n>,"type":"..."}``."""
    at = line.rfind(_N_MARK)
    if at < 0:
        return None
    end = line.find(b",", at + len(_N_MARK))
    try:
        return int(line[at + len(_N_MARK):end])
    except ValueError:
        return None


def _record_type(line: bytes) -> str:
    at = line.rfind(b',"type":"')
    return line[at + 9:-2].decode() if at >= 0 else "?"


def render(report: Report) -> str:
    manifest = report.manifest
    window = manifest.get("window", {})
    lines = []
    if manifest:
        lines.append(f"export {manifest.get('export_id')} of {manifest.get('tenant')}, "
                     f"{window.get('from')} .. {window.get('to')}, redaction "
                     f"{manifest.get('redaction_level')}: {manifest.get('record_count')} records")
    lines += [f"note: {note}" for note in report.notes]
    if report.ok:
        lines.append("OK: signature, checksums and record chain verified" + (
            "; commitments match the unredacted bundle" if any(
                "commitments checked" in note for note in report.notes) else ""))
    elif report.only_unpinned:
        lines.append("UNVERIFIED SIGNER: checksums and record chain hold, but the signer is "
                     "not pinned")
        lines += [f"  {problem}" for problem in report.problems]
    else:
        lines.append(f"FAILED: {len(report.problems)} problem(s)")
        lines += [f"  {problem}" for problem in report.problems]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="the export bundle (.tar) or the directory it unpacks to")
    parser.add_argument("--public-key", help="pin the portal's Ed25519 public key (base64, as "
                        "GET /api/v1/signing-key/ gives it)")
    parser.add_argument("--key-id", action="append", default=[],
                        help="trust the signing key with this fingerprint (16 hex digits, "
                        "the key_id of GET /api/v1/signing-key/); repeatable")
    parser.add_argument("--trusted-keys", default=os.environ.get(TRUSTED_KEYS_ENV),
                        help="a file of trusted keys or key ids, one a line (default: "
                        f"${TRUSTED_KEYS_ENV})")
    parser.add_argument("--commitment-key", metavar="KEYFILE",
                        help="with --unredacted: check a redacted bundle's commitments under "
                        "this key (as `ledger commitment-key` writes it)")
    parser.add_argument("--unredacted", metavar="BUNDLE",
                        help="an unredacted bundle of the same records, verified too")


def run(args: argparse.Namespace) -> int:
    try:
        trust = (Trust.from_file(args.trusted_keys, args.public_key, tuple(args.key_id))
                 if args.trusted_keys else
                 Trust(args.public_key, key_ids=frozenset(args.key_id)))
    except OSError as exc:
        print(f"verify-export: the trusted keys file cannot be read: {exc.strerror}",
              file=sys.stderr)
        return EXIT_FAILED
    if bool(args.commitment_key) != bool(args.unredacted):
        print("verify-export: --commitment-key and --unredacted go together", file=sys.stderr)
        return EXIT_FAILED
    report = verify_bundle(args.bundle, trust=trust)
    if args.commitment_key:
        _check_against_unredacted(args, trust, report)
    print(render(report))
    if report.ok:
        return EXIT_OK
    return EXIT_UNVERIFIED if report.only_unpinned else EXIT_FAILED


def _check_against_unredacted(args: argparse.Namespace, trust: Trust, report: Report) -> None:
    from .verify_commitments import check_commitments, read_key

    other = verify_bundle(args.unredacted, trust=trust)
    report.problems += [Problem(p.kind, f"(unredacted bundle) {p.detail}")
                        for p in other.problems]
    if other.manifest.get("redaction_level") != "none":
        report.add("commitment", "the bundle given as --unredacted is redacted")
    if report.manifest.get("tenant") != other.manifest.get("tenant"):
        report.add("commitment", "the two bundles are of different tenants")
    if report.problems:
        return
    try:
        key_id, secret = read_key(args.commitment_key)
    except (OSError, ValueError) as exc:
        report.add("commitment", f"the commitment key file cannot be read: {exc}")
        return
    check_commitments(args.bundle, args.unredacted, key_id, secret, report)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
