"""HTTP to the portal with the standard library only, so agents take on no dependency."""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

USER_AGENT = "ledger-portal-client/0.1"


class PortalUnreachable(Exception):
    """No HTTP answer: connection refused or reset, timeout, name resolution."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any  # the parsed JSON, or the text when it is not JSON
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def retryable(self) -> bool:
        """Worth sending again unchanged: the portal is overloaded or failing, not the data."""
        return self.status == 429 or self.status >= 500


class Transport:
    """``Authorization: Bearer <api key>`` requests against one portal."""

    def __init__(self, url: str, api_key: str):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"the portal URL must be http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT,
                         "Accept": "application/json"}

    def request(self, method: str, path: str, *, body: bytes | None = None,
                timeout: float) -> Reply:
        """One request; raises ``PortalUnreachable`` when there is no HTTP answer at all."""
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = "application/json"
        # the scheme is checked in __init__: http or https only
        request = urllib.request.Request(f"{self.url}{path}", data=body,  # noqa: S310
                                         headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return Reply(response.status, _parse(response.read()),
                             _retry_after(response.headers))
        except urllib.error.HTTPError as exc:
            with exc:
                return Reply(exc.code, _parse(exc.read()), _retry_after(exc.headers))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            # URLError wraps refused / unresolvable; OSError covers resets and timeouts;
            # ValueError a malformed URL, which no retry will fix but must not kill the sender.
            raise PortalUnreachable(f"{method} {self.url}{path}: {exc}") from exc

    def post_json(self, path: str, data: Any, *, timeout: float) -> Reply:
        return self.request("POST", path, body=json.dumps(data).encode(), timeout=timeout)


def _parse(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")[:2000]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter: uniform in [d/2, d] for d = min(cap, base * 2**attempt)
    (half of it fixed so a retry never comes back at once, half random so many agents that
    lost the portal together do not come back together)."""
    delay = min(cap, base * (2 ** min(attempt, 30)))
    return float(delay / 2 + random.uniform(0, delay / 2))
