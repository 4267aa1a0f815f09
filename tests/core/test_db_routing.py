"""Which database a read goes to (core/db_routing.py), without a replica server: the rules of
the router and of a stale-ok block. tests/faults/test_read_replica.py runs them against a real
streaming replica."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory

from core import db_routing
from core.db_routing import (
    READ_PRIMARY_COOKIE,
    REPLICA,
    ReadYourWritesMiddleware,
    ReplicaRouter,
    stale_ok_reads,
)
from core.models import ApiKey, Tenant
from runs.models import Run, ToolCall

router = ReplicaRouter()


@pytest.fixture
def healthy_replica(monkeypatch: Any) -> None:
    """A replica alias that the last look found usable (no server is asked)."""
    monkeypatch.setattr(db_routing, "replica_configured", lambda: True)
    monkeypatch.setattr(db_routing, "replica_usable", lambda now=None: True)


def test_without_a_replica_a_stale_ok_block_reads_the_one_database():
    if REPLICA in settings.DATABASES:
        pytest.skip("DATABASE_REPLICA_URL is set for this run")
    assert settings.DATABASE_ROUTERS == []
    with stale_ok_reads() as alias:
        assert alias == "default"


def test_only_reads_inside_a_stale_ok_block_go_to_the_replica(healthy_replica):
    assert router.db_for_read(Run) == "default"
    with stale_ok_reads() as alias:
        assert alias == REPLICA
        assert router.db_for_read(Run) == REPLICA
        assert router.db_for_read(ToolCall) == REPLICA
        assert router.db_for_write(Run) == "default"
    assert router.db_for_read(Run) == "default"


def test_who_may_do_what_is_always_read_on_the_primary(healthy_replica):
    with stale_ok_reads():
        for model in (User, Tenant, ApiKey):
            assert router.db_for_read(model) == "default", model


@pytest.mark.django_db(transaction=True)
def test_reads_in_a_transaction_on_the_primary_stay_there(healthy_replica):
    with stale_ok_reads():
        with transaction.atomic():
            assert router.db_for_read(Run) == "default"
        assert router.db_for_read(Run) == REPLICA
    with transaction.atomic(), stale_ok_reads() as alias:
        assert alias == "default"  # a block opened inside a transaction reads the primary


def test_migrations_never_run_on_the_replica():
    assert router.allow_migrate(REPLICA, "runs") is False
    assert router.allow_migrate("default", "runs") is None


def test_a_browser_that_changed_something_reads_the_primary_for_a_while(healthy_replica,
                                                                           settings):
    settings.LEDGER_REPLICA_MAX_LAG_SECONDS, settings.LEDGER_REPLICA_CHECK_SECONDS = 30, 5
    seen: list[str] = []

    def view(request: HttpRequest) -> HttpResponse:
        with stale_ok_reads() as alias:
            seen.append(alias)
        return HttpResponse("ok")

    middleware = ReadYourWritesMiddleware(view)
    factory = RequestFactory()
    agent = factory.post("/api/v1/batches/")
    assert READ_PRIMARY_COOKIE not in middleware(agent).cookies  # no session: not a browser
    browser = factory.post("/runs/acme/r1/annotate/")
    browser.COOKIES[settings.SESSION_COOKIE_NAME] = "a-session"
    cookie = middleware(browser).cookies[READ_PRIMARY_COOKIE]
    assert int(cookie["max-age"]) == 36  # the lag it tolerates, the time between two looks
    assert cookie["httponly"]

    after = factory.get("/runs/acme/r1/")
    after.COOKIES[READ_PRIMARY_COOKIE] = "1"
    middleware(after)
    middleware(factory.get("/runs/acme/r1/"))  # another browser, or after the cookie expired
    assert seen == ["default", "default", "default", REPLICA]
