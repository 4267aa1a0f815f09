"""Bookkeeping that may be skipped: writes to the cache that no answer depends on.

The cache (Redis in production) carries only bookkeeping: when an API key was last used, and
the counts behind rate limits. A cache that is down must never turn into an error for an
agent, so each such write goes through ``best_effort``: on failure it is skipped, logged once
in a while and counted (``skipped()``), and the request goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
LOG_EVERY_SECONDS = 60.0

_lock = threading.Lock()
_skipped = 0
_last_logged = 0.0


def skipped() -> int:
    """How many bookkeeping writes this process has skipped because the cache failed."""
    return _skipped


def best_effort(what: str, write: Callable[[], T], fallback: T) -> T:
    """``write()``, or ``fallback`` when the cache fails (counted, logged once a minute)."""
    global _skipped, _last_logged
    try:
        return write()
    except Exception as exc:
        with _lock:
            _skipped += 1
            now = time.monotonic()
            quiet = now - _last_logged < LOG_EVERY_SECONDS
            if not quiet:
                _last_logged = now
        if not quiet:
            log.warning("cache unavailable: %s skipped (%d skipped so far): %s", what,
                        _skipped, exc)
        return fallback
