"""Rate limits per API key: one agent's flood cannot crowd out the others.

People signed in to the portal are not limited here (their login is throttled by django-axes).
The counts live in the cache; when the cache is unreachable the request goes through uncounted,
since a limit that fails closed would turn a cache outage into an agent outage.
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
        # the cache is down: count nothing, refuse nothing
        return best_effort("a rate-limit count",
                           lambda: super(ApiKeyRateThrottle, self).allow_request(request, view),
                           fallback=True)
