"""The client's dead-letter file: what it could not deliver, in order, with the reason.

Records the portal refused (after the batch was split down to them), records a server error
kept refusing, records the buffer had no room for (and every later record of the same run, so
what reached the portal is a prefix of the run, never a run with holes) and records still
buffered when the client closed are each appended as one JSON line:

    {"at": "<UTC time>", "reason": "...", "status": 400, "errors": [...], "run_id": "...",
     "records": 3, "batch": {"runs": [...]}}

``batch`` is a batch as ``POST /api/v1/batches/`` takes it, so nothing is lost: once the cause
is fixed, ``python -m ledger_client.dead_letter FILE`` (``LEDGER_URL``, ``LEDGER_API_KEY``)
sends the lines again in order; the portal is idempotent on external ids.
The file holds what the agent recorded, unredacted: it is created readable by its owner only.
Standard library only, like the rest of the client.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .http import PortalUnreachable, Transport

ENV = "LEDGER_DEAD_LETTER_FILE"
DEFAULT = "~/.ledger/dead-letter.jsonl"
BATCH_PATH = "/api/v1/batches/"


def default_path() -> Path:
    return Path(os.path.expanduser(os.environ.get(ENV) or DEFAULT))


class DeadLetter:
    """Appends undeliverable batches to a JSON-lines file (thread-safe, in call order)."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self._lock = threading.Lock()

    def add(self, batch: bytes, *, reason: str, run_ids: list[str], records: int,
            status: int | None = None, errors: list[Any] | None = None) -> None:
        line = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "reason": reason,
                "status": status, "errors": errors or [], "run_id": ",".join(run_ids),
                "records": records, "batch": json.loads(batch)}
        text = json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
                handle.write(text)


def resend(path: str | os.PathLike[str], transport: Transport, timeout: float = 30.0
           ) -> tuple[int, list[str]]:
    """Send every line's batch again, in order; stop at the first one the portal does not
    take. Returns the lines sent and, if it stopped, why."""
    sent = 0
    with open(path, encoding="utf-8") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            batch = json.dumps(json.loads(raw)["batch"]).encode()
            try:
                reply = transport.request("POST", BATCH_PATH, body=batch, timeout=timeout)
            except PortalUnreachable as exc:
                return sent, [f"line {number}: portal unreachable: {exc}"]
            if not reply.ok:
                return sent, [f"line {number}: HTTP {reply.status}: {reply.body}"]
            sent += 1
    return sent, []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ledger_client.dead_letter FILE  (LEDGER_URL, "
              "LEDGER_API_KEY)", file=sys.stderr)
        return 2
    url, key = os.environ.get("LEDGER_URL", ""), os.environ.get("LEDGER_API_KEY", "")
    if not url or not key:
        print("dead_letter: set LEDGER_URL and LEDGER_API_KEY", file=sys.stderr)
        return 2
    sent, problems = resend(args[0], Transport(url.rstrip("/"), key))
    print(f"{sent} batch(es) sent again" + (f"; stopped at {problems[0]}" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
