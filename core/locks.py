"""Who is working on a job right now, as the database sees it.

``held_while_walking`` takes a PostgreSQL session advisory lock for the length of a job's walk:
a second worker handed the same message (a broker redelivering it while the first still runs)
does not get it and stands down, and a worker that dies releases it with its connection, so the
redelivered message carries on at once. On SQLite (the embedded default: one worker process
walks at a time) the lock is always granted.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


def _keys(kind: str, pk: int) -> tuple[int, int]:
    # Two 32-bit keys: the kind (a stable hash of its name) and the job's id (wrapped).
    return zlib.crc32(kind.encode()) - 2**31, (pk % 2**32) - 2**31


def walked_elsewhere(kind: str, pk: int) -> bool:
    """Whether another process walks job ``kind``/``pk`` right now (never on SQLite)."""
    with held_while_walking(kind, pk) as ours:
        return not ours


@contextmanager
def held_while_walking(kind: str, pk: int) -> Iterator[bool]:
    """Yields whether this process holds job ``kind``/``pk``; releases it afterwards."""
    if connection.vendor != "postgresql":
        yield True
        return
    keys = _keys(kind, pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", keys)
        ours = bool(cursor.fetchone()[0])
    try:
        yield ours
    finally:
        if ours and connection.connection is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", keys)
