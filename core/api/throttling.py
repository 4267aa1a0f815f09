"""Rate limits per API key: one agent's flood cannot crowd out the others.

People signed in to the portal are not limited here (their login is throttled by django-axes).
The counts live in the cache (Redis, shared by every web process on every machine); when the
cache is unreachable the request goes through uncounted, since a limit that fails closed would
turn a cache outage into an agent outage.

Each count is one atomic increment (Redis ``INCR``), never a read followed by a write: DRF's
own ``SimpleRateThrottle`` reads a key's list of request times and writes it back, so requests
arriving at once (at two web processes, or two workers of one) each read the same list and
each is let through on it (tests/integration/test_stateless_web.py saw 13 of a quota of 10
pass). The window slides as Cloudflare's does: the previous fixed window's count, weighted by
how much of it still lies within the last ``duration``, plus the current window's count.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from .bookkeeping import best_effort


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
        """Count this request in its window, atomically; take it back if over the limit (a
        refused request does not count, as with DRF's throttle)."""
        assert self.num_requests is not None
        assert self.duration is not None
        self.now = self.timer()
        window, into = divmod(self.now, self.duration)
        self.elapsed = into / self.duration
        current = f"{self.key}:{int(window)}"
        self.previous = int(self.cache.get(f"{self.key}:{int(window) - 1}", 0))
        self.cache.add(current, 0, 2 * self.duration)
        self.count = int(self.cache.incr(current))
        if self.previous * (1 - self.elapsed) + self.count <= self.num_requests:
            return True
        self.cache.decr(current)
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
