"""Offline guessing of a redacted card number from a strict export: before and now.

    .venv/bin/python -m bench.guess_redacted [--unknown-digits 6]

Records one run whose tool call carries a card number, makes a strict export of it, and plays
the reader who knows the card's BIN (first six digits) and last four and enumerates the
Luhn-valid middles (10^(unknown-1) guesses; 10^5 for a 16-digit card), hashing each candidate
record exactly as the ledger does:

- **before** (the same-run baseline): against the ``content_hash`` the portal used to publish
  in strict outputs (read here from the database, which is where it came from);
- **now**: against every 64-hex value the strict bundle actually carries (its commitments and
  checksums);
- **key holder**: against the bundle's ``input`` field commitment, with the tenant's commitment
  key, as an auditor given it under ``view_unredacted`` could.

Prints guesses per second, the time to the answer (or to exhausting the space), and PASS when
the strict bundle alone confirms no guess. Needs a local PostgreSQL (see ``bench/_common.py``).
"""

from __future__ import annotations

import argparse
import hmac
import os
import re
import tarfile
import time
from collections.abc import Callable, Iterator
from hashlib import sha256
from typing import Any

import orjson

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    git_state,
    record_figure,
    table,
)

BIN, LAST4 = "453914", "6467"
PLACEHOLDER = "\x00guess\x00"


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def candidates(unknown: int) -> Iterator[str]:
    for middle in range(10 ** unknown):
        digits = f"{BIN}{middle:0{unknown}d}{LAST4}"
        if luhn_valid(digits):
            yield " ".join(digits[i:i + 4] for i in range(0, len(digits), 4))


def the_card(unknown: int, seed: int) -> str:
    """A Luhn-valid card with the bench's BIN and last four, its middle picked by ``seed``."""
    valid = list(candidates(unknown))
    return valid[seed % len(valid)]


def record_and_export(card: str, data_dir: str) -> tuple[Any, bytes, Any]:
    """Ingest the run, export it strict; the stored tool call, the bundle's bytes, the key."""
    from datetime import UTC, datetime

    from django.conf import settings
    from django.contrib.auth.models import User

    from core.models import Tenant
    from core.services import grant_role
    from exports.services import produce_now, request_export
    from exports.storage import export_storage
    from runs.commitments import commitment_key
    from runs.ingest import ingest_batch
    from runs.ingest_schema import parse_batch
    from runs.models import ToolCall

    settings.LEDGER_EXPORT_TMP_DIR = os.path.join(data_dir, "export-tmp")
    tenant = Tenant.objects.create(slug="guess", name="Guess")
    auditor = User.objects.create_user("bench-auditor")
    grant_role(auditor, "export", tenant)
    ingest_batch(tenant, parse_batch({"runs": [{
        "run_id": "guess-run", "agent_id": "billing", "goal": "refund", "status": "succeeded",
        "started_at": "2026-10-01T09:00:00Z",
        "tool_calls": [{"call_id": "t1", "tool": "refund_payment", "action_class": "write",
                        "input": {"card": card, "amount": 12}, "output": {"ok": True},
                        "status": "succeeded", "started_at": "2026-10-01T09:00:01Z"}]}]}),
        recorded_by="bench")
    export = produce_now(request_export(tenant, datetime(2000, 1, 1, tzinfo=UTC),
                                        datetime(2100, 1, 1, tzinfo=UTC), by=auditor,
                                        enqueue=False))
    with export_storage().open(export.file, "rb") as handle:
        bundle = handle.read()
    stored = ToolCall.objects.values("content_hash").get(call_id="t1")
    return stored, bundle, commitment_key(tenant)


def bundle_files(bundle: bytes, data_dir: str) -> dict[str, bytes]:
    path = os.path.join(data_dir, "guess-bundle.tar")
    with open(path, "wb") as handle:
        handle.write(bundle)
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
                for m in tar.getmembers() if m.isfile()}


def strict_tool_call(files: dict[str, bytes]) -> dict[str, Any]:
    for line in files["records.jsonl"].splitlines():
        record = orjson.loads(line)
        if record["type"] == "tool_call":
            return dict(record["data"])
    raise SystemExit("the strict bundle has no tool call")


def hasher_for(row: dict[str, Any]) -> Callable[[str], str]:
    """The content hash of the strict row with the redacted card replaced by a guess: the
    canonical JSON around the card is fixed, so each guess hashes prefix + card + suffix."""
    content = {k: v for k, v in row.items()
               if k not in ("seq", "content_hash", "chain_hash", "commitment")}
    content["input"] = {**content["input"], "card": PLACEHOLDER}
    text = orjson.dumps({"kind": "tool_call", **content}, option=orjson.OPT_SORT_KEYS)
    prefix, suffix = text.split(orjson.dumps(PLACEHOLDER)[1:-1])

    def content_hash_of(card: str) -> str:
        return sha256(prefix + card.encode() + suffix).hexdigest()
    return content_hash_of


def attack(guesses: list[str], test: Callable[[str], bool]) -> tuple[str | None, float, int]:
    started = time.perf_counter()
    for tried, card in enumerate(guesses, 1):
        if test(card):
            return card, time.perf_counter() - started, tried
    return None, time.perf_counter() - started, len(guesses)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unknown-digits", type=int, default=6)
    parser.add_argument("--seed", type=int, default=77_777)
    add_db_arguments(parser, "guess")
    args = parser.parse_args(argv)
    card = the_card(args.unknown_digits, args.seed)
    guesses = list(candidates(args.unknown_digits))
    with bench_database(args) as db:
        print(environment_line(db), flush=True)
        print(git_state(), flush=True)
        stored, bundle, key = record_and_export(card, args.data_dir)
        files = bundle_files(bundle, args.data_dir)
        row = strict_tool_call(files)
        if card in files["records.jsonl"].decode():
            raise SystemExit("FAIL: the strict bundle holds the card itself")
        content_hash_of = hasher_for(row)
        published = set(re.findall(rb"[0-9a-f]{64}", b"".join(files.values())))
        published_text = {h.decode() for h in published}
        secret = bytes(key.secret)
        field = row["commitment"]["fields"]["input"]
        input_text = orjson.dumps({**row["input"], "card": PLACEHOLDER},
                                  option=orjson.OPT_SORT_KEYS)
        before_input, after_input = input_text.split(orjson.dumps(PLACEHOLDER)[1:-1])

        def with_key(guess: str) -> bool:
            canonical = (before_input + guess.encode() + after_input).decode()
            return hmac.new(secret, f"field:input:{canonical}".encode(),
                            sha256).hexdigest() == field

        cases = [
            ("before: content_hash in strict outputs",
             lambda g: content_hash_of(g) == stored["content_hash"]),
            ("now: every 64-hex value in the strict bundle",
             lambda g: content_hash_of(g) in published_text),
            ("key holder: HMAC field commitment + key", with_key),
        ]
        rows, found_now = [], None
        for name, test in cases:
            found, seconds, tried = attack(guesses, test)
            if name.startswith("now"):
                found_now = found
            rows.append([name, f"{tried:,}", f"{tried / seconds:,.0f}", f"{seconds:.2f}",
                         "recovered" if found == card else ("wrong" if found else "not found")])
        print(f"card: BIN {BIN}, last four {LAST4}, {args.unknown_digits} unknown digits: "
              f"{len(guesses):,} Luhn-valid guesses")
        print(table(["attack", "guesses tried", "guesses/s", "seconds", "result"], rows))
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        record_figure("guess_redacted", f"{len(guesses):,} guesses against a strict bundle",
                      "recovered" if found_now == card else
                      ("wrong" if found_now else "none confirmed"),
                      "none confirmed", "content_hash: " + rows[0][4], "-", found_now is None)
        if found_now is None:
            print("PASS: the strict bundle confirms no guess; testing one needs the 256-bit "
                  "commitment key (2^256 keys at the rate above is beyond any time scale)")
        else:
            print("FAIL: the strict bundle confirmed a guess")


if __name__ == "__main__":
    main()
