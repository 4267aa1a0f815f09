"""Rate limits per API key: one agent's flood cannot crowd out the others.

``LEDGER_API_RATE`` is "N/period" (period s, min, hour or day). People signed in to the portal
are not limited here (their login is throttled by django-axes). The counts live in the cache
(Redis, shared by every web process on every machine); when the cache is unreachable the
request goes through uncounted, since a limit that fails closed would turn a cache outage into
an agent outage.

Each count is one atomic increment (Redis ``INCR``), never a read followed by a write: DRF's
own ``SimpleRateThrottle`` reads a key's list of request times and writes it back, so requests
arriving at once (at two web processes, or two workers of one) each read the same list and
each is let through on it (tests/integration/test_stateless_web.py saw 13 of a quota of 10
pass); that list was also up to 12,000 floats pickled each way per request at the default
rate. The window slides as Cloudflare's does: the previous fixed window's count, weighted by
how much of it still lies within the last ``duration``, plus the current window's count. On
Redis the previous count, the increment and its expiry are one pipelined round trip; a refused
request takes its increment back (refusals do not count).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.redis import RedisCache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from .bookkeeping import best_effort


def count_in_window(current: str, previous: str, ttl: int) -> tuple[int, int]:
    """One more in the counter ``current`` of the default cache (kept ``ttl`` seconds), and the
    count of ``previous``: (current after the increment, previous). Redis: GET, INCR and EXPIRE
    pipelined in one round trip; other caches (the embedded default's local memory): get, add,
    incr."""
    cache = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(cache, RedisCache):
        now_key = cache.make_and_validate_key(current)
        before_key = cache.make_and_validate_key(previous)
        pipe = _write_client(cache).pipeline(transaction=False)
        pipe.get(before_key)
        pipe.incr(now_key)
        pipe.expire(now_key, ttl)
        before, count, _ = pipe.execute()
        return int(count), int(before or 0)
    before = int(cache.get(previous, 0))
    cache.add(current, 0, ttl)
    try:
        return int(cache.incr(current)), before
    except ValueError:  # expired between the two calls: this request starts it
        cache.add(current, 1, ttl)
        return 1, before


def _write_client(cache: RedisCache) -> Any:
    """The client of the cache's write server, made once per cache object (one a thread):
    Django's ``get_client`` wraps its pool in a new ``redis.Redis`` on every call, 0.1 ms of
    each counted request. A client is safe to share; its pool follows a fork."""
    backend: Any = cache._cache
    client = backend.__dict__.get("_ledger_write_client")
    if client is None:
        client = backend._ledger_write_client = backend.get_client(write=True)
    return client


def take_back(current: str) -> None:
    """Undo this request's increment of ``current`` (it was refused)."""
    cache = caches[DEFAULT_CACHE_ALIAS]
    if isinstance(cache, RedisCache):
        _write_client(cache).decr(cache.make_and_validate_key(current))
        return
    cache.decr(current)


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_rate(self) -> str | None:
        return settings.LEDGER_API_RATE or None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        key_id = getattr(getattr(request.user, "api_key", None), "pk", None)
        if key_id is None:
            return None  # a person's session, or nobody: not limited per key
        return self.cache_format % {"scope": self.scope, "ident": key_id}

    def allow_request(self, request: Request, view: Any) -> bool:
        # The rate is read per request (not once at import), so a changed setting applies.
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        self.key = self.get_cache_key(request, view) if self.rate else None
        if self.key is None or self.num_requests is None or self.duration is None:
            return True
        # the cache is down: count nothing, refuse nothing
        return best_effort("a rate-limit count", self._count, fallback=True)

    def _count(self) -> bool:
        """Count this request in its window, atomically; take it back if over the limit."""
        assert self.num_requests is not None
        assert self.duration is not None
        self.now = self.timer()
        window, into = divmod(self.now, self.duration)
        self.elapsed = into / self.duration
        current = f"{self.key}:{int(window)}"
        self.count, self.previous = count_in_window(current, f"{self.key}:{int(window) - 1}",
                                                    2 * self.duration)
        if self.previous * (1 - self.elapsed) + self.count <= self.num_requests:
            return True
        take_back(current)
        self.count -= 1
        return False

    def wait(self) -> float | None:
        """Seconds until one more request would be let through (the Retry-After header)."""
        limit, duration = self.num_requests, self.duration
        if limit is None or duration is None or not hasattr(self, "count"):
            return None
        left_in_window = (1 - self.elapsed) * duration
        if self.count + 1 > limit:  # wait for the next window, then for this one to fade
            fade = max(0.0, 1 - (limit - 1) / self.count) if self.count else 0.0
            return left_in_window + fade * duration
        # the previous window's weight must fade to make room for one more
        needed = 1 - (limit - self.count - 1) / self.previous if self.previous else 0.0
        return max(1.0, (needed - self.elapsed) * duration)
