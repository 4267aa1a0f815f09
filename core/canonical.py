"""The canonical JSON form that ledger hashes are computed over.

Sorted keys, no insignificant whitespace, UTF-8, and one fixed timestamp format
(``YYYY-MM-DDTHH:MM:SS.ffffffZ``, always UTC, always microseconds), so the same record hashes the
same on every machine and after every round trip through the database.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = "0" * 64


def canonical_timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("ledger timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(content)).hexdigest()


def chain_hash(previous: str, seq: int, record_hash: str) -> str:
    """The link for record ``seq``: it commits to the previous link and the record's content."""
    return hashlib.sha256(f"{previous}:{seq}:{record_hash}".encode()).hexdigest()
