"""A Redis outage does not stop the agents: the cache only carries bookkeeping (when a key was
last used, rate-limit counts), so while it is down batches, decisions and approval polls keep
flowing from the database, the skipped bookkeeping is counted, and every API error stays JSON.
"""

from __future__ import annotations

import pytest
from django.test import override_settings

from core.api import bookkeeping


@pytest.fixture
def cache_on_own_redis(own_redis):
    with override_settings(CACHES={"default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": own_redis.url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5}}}):
        yield own_redis


def test_agents_keep_working_while_the_cache_is_down(acme, key_client, make_run,
                                                     cache_on_own_redis):
    agent = key_client(acme, ["ingest", "view_ledger"])
    assert agent.post("/api/v1/batches/", {"runs": [make_run()]},
                      format="json").status_code == 201
    cache_on_own_redis.stop()
    skipped = bookkeeping.skipped()
    batch = agent.post("/api/v1/batches/", {"runs": [make_run()]}, format="json")
    assert batch.status_code == 201, batch.content[:500]
    decision = agent.post("/api/v1/decisions/", {"tool": "get_customer",
                                                 "action_class": "read"}, format="json")
    assert decision.status_code == 201
    held = agent.post("/api/v1/decisions/", {"tool": "refund", "action_class": "write"},
                      format="json").json()
    poll = agent.get(f"/api/v1/approvals/{held['approval']['id']}/")
    assert poll.status_code == 200
    assert poll.json()["status"] == "pending"
    assert bookkeeping.skipped() > skipped
    cache_on_own_redis.start()
    assert agent.get("/api/v1/runs/").status_code == 200


def test_an_unexpected_api_error_is_json(acme, key_client, monkeypatch):
    from runs.api import views

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views.RunList, "list", broken)
    response = key_client(acme, ["view_ledger"]).get("/api/v1/runs/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("application/json")
    assert "boom" not in response.content.decode()
    assert response.json()["detail"]


def test_a_database_outage_is_a_json_503_with_retry_after(acme, key_client, monkeypatch):
    from django.db import OperationalError

    from runs.api import views

    def unavailable(*args, **kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(views.RunList, "list", unavailable)
    response = key_client(acme, ["view_ledger"]).get("/api/v1/runs/")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["detail"].startswith("The ledger database is unavailable")


@pytest.mark.django_db
def test_the_health_check_reports_the_cache_down_but_keeps_the_web_process_in_service(
        client, cache_on_own_redis):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok", "cache": "ok"}
    cache_on_own_redis.stop()
    answer = client.get("/healthz")
    assert answer.status_code == 200  # a load balancer must not take agents' entry away
    assert answer.json() == {"status": "ok", "database": "ok", "cache": "unavailable"}
