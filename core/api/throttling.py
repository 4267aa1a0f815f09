"""Rate limits per API key: one agent's flood cannot crowd out the others.

``LEDGER_API_RATE`` is "N/period" (period s, min, hour or day): each key may make N requests
per window of that period, windows starting at multiples of the period since the epoch. The
request after the N-th in a window is refused with a 429 whose ``Retry-After`` is the time
left until the next window. The count is one integer per key and window in the cache, added
to with Redis's ``INCR`` (in one round trip with its ``EXPIRE``), so every web process counts
against the same limit and a request costs the same whatever the count.

This is a fixed window, not DRF's sliding log (``SimpleRateThrottle``), which kept every
request's time in a list it read, unpickled, pickled and wrote back on each request: at the
default 12,000/min that was up to 12,000 floats (about 100 KB) each way per request. The
difference a client may see: a key that spends its whole limit at the end of one window may
spend it again at the start of the next, so up to 2N requests can land within one period
spanning the two windows (a sliding log allows N in any period); and a refusal's
``Retry-After`` is the time to the next window rather than an estimate of when one slot
frees up.

People signed in to the portal are not limited here (their login is throttled by django-axes).
When the cache is unreachable the request goes through uncounted, since a limit that fails
closed would turn a cache outage into an agent outage.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from .bookkeeping import best_effort

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"N/period"`` -> (N, the period in seconds); the period by its first letter, as DRF
    reads it ("12000/min", "5/s", "100/hour")."""
    count, period = rate.split("/")
    return int(count), PERIOD_SECONDS[period[0]]


def count_in_window(name: str, ttl: int) -> int:
    """One more in the counter ``name`` of the default cache, kept ``ttl`` seconds; the count
    after it. Redis: ``INCR`` and ``EXPIRE`` in one pipelined round trip. Other caches (the
    local-memory one of the embedded default): ``add`` then ``incr``."""
    cache = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(cache, RedisCache):
        key = cache.make_and_validate_key(name)
        client = cache._cache.get_client(key, write=True)
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl)
        count, _ = pipe.execute()
        return int(count)
    cache.add(name, 0, ttl)
    try:
        return int(cache.incr(name))
    except ValueError:  # expired between the two calls: this request starts it
        cache.add(name, 1, ttl)
        return 1


class ApiKeyRateThrottle(BaseThrottle):
    scope = "api_key"
    timer = staticmethod(time.time)

    def __init__(self) -> None:
        self.retry_after: float | None = None

    def allow_request(self, request: Request, view: Any) -> bool:
        # The rate is read per request (not once at import), so a changed setting applies.
        rate = settings.LEDGER_API_RATE or None
        key_id = getattr(getattr(request.user, "api_key", None), "pk", None)
        if rate is None or key_id is None:
            return True  # no limit set; or a person's session, or nobody: not limited per key
        limit, period = parse_rate(rate)
        now = self.timer()
        window = int(now // period)
        self.retry_after = (window + 1) * period - now
        name = f"throttle:{self.scope}:{key_id}:{period}:{window}"
        # the cache is down: count nothing, refuse nothing
        count = best_effort("a rate-limit count", lambda: count_in_window(name, period),
                            fallback=0)
        return count <= limit

    def wait(self) -> float | None:
        return self.retry_after
