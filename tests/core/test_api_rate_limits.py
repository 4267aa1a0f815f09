"""Rate limits per API key, counted in the shared cache: one number per key and window (Redis
in production, so every web process counts against the same limit), whatever the number of
requests already counted. The window slides (tests/core/test_web_hygiene.py has its edge)."""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from django.core.cache import caches
from django.test import override_settings

from core.api.throttling import ApiKeyRateThrottle

WINDOW_START = 1_800_000_000.0  # a multiple of 60: a minute window starts here


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    fake = _Clock(WINDOW_START)
    monkeypatch.setattr(ApiKeyRateThrottle, "timer", staticmethod(fake))
    return fake


def _clear_cache() -> None:
    caches["default"].clear()


@override_settings(LEDGER_API_RATE="2/s")
def test_each_key_has_its_own_count(acme, globex, key_client, clock):
    _clear_cache()
    busy, calm, other = key_client(acme), key_client(acme), key_client(globex)
    assert [busy.get("/api/v1/runs/").status_code for _ in range(3)] == [200, 200, 429]
    assert calm.get("/api/v1/runs/").status_code == 200  # another key of the same tenant
    assert other.get("/api/v1/runs/").status_code == 200


@override_settings(LEDGER_API_RATE="")
def test_no_rate_means_no_limit(acme, key_client):
    _clear_cache()
    agent = key_client(acme)
    assert {agent.get("/api/v1/runs/").status_code for _ in range(5)} == {200}


class _Key:
    pk = 7


class _Principal:
    api_key = _Key()


class _Request:
    user = _Principal()


@override_settings(LEDGER_API_RATE="100000/hour",
                   CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem."
                                                  "LocMemCache", "LOCATION": "rate-limits"}})
def test_a_keys_count_stays_one_small_number_however_many_requests_it_counted(clock):
    """The bookkeeping per key does not grow with the requests counted: what the cache holds
    (and sends to and from Redis on each request) is one counter, not a log of requests."""
    cache = caches["default"]
    cache.clear()
    for i in range(2_000):
        clock.now = WINDOW_START + i * 0.01
        assert ApiKeyRateThrottle().allow_request(_Request(), None)  # type: ignore[arg-type]
    stored: dict[str, Any] = cache._cache  # type: ignore[attr-defined]  # locmem's own store
    assert stored, "nothing counted"
    assert all(len(value) < 64 for value in stored.values()), {
        key: len(value) for key, value in stored.items()}
    assert 2_000 in [pickle.loads(value) for value in stored.values()]
    cache.clear()


@override_settings(LEDGER_API_RATE="5/min")
def test_the_limit_holds_with_the_cache_the_portal_runs_on(clock):
    """Whichever cache is configured (Redis with REDIS_URL set, as in production and in the
    PostgreSQL suite; the local-memory cache otherwise): five pass, the sixth is refused, and
    a fresh throttle (as in another process) sees the same count."""
    _clear_cache()
    clock.now = WINDOW_START + 30
    answers = [ApiKeyRateThrottle().allow_request(_Request(), None)  # type: ignore[arg-type]
               for _ in range(5)]
    assert answers == [True] * 5
    refused = ApiKeyRateThrottle()
    assert refused.allow_request(_Request(), None) is False  # type: ignore[arg-type]
    # 30 s to the next window, where the five weigh 5 x (1 - t/60): room at t = 12 s
    assert refused.wait() == pytest.approx(42.0)
    clock.now = WINDOW_START + 60 + 11
    assert ApiKeyRateThrottle().allow_request(_Request(), None) is False  # type: ignore[arg-type]
    clock.now = WINDOW_START + 60 + 12.5
    assert ApiKeyRateThrottle().allow_request(_Request(), None) is True  # type: ignore[arg-type]
    _clear_cache()
