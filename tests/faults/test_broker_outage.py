"""A job submitted while the broker is down is kept, not lost and not a 500: the request that
queued it succeeds, the message waits in the outbox, and the beat task sends it once the
broker is back, exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from core.jobs import dispatch_outbox
from core.models import OutboxMessage
from operations.models import Replay

from .conftest import broker_at


@pytest.fixture
def broker_on_own_redis(own_redis: Any) -> Iterator[Any]:
    with broker_at(own_redis.url):
        yield own_redis


def queued_messages(url: str) -> int:
    count = redis.Redis.from_url(url).llen("celery")
    assert isinstance(count, int)  # the synchronous client
    return count


@pytest.mark.django_db(transaction=True)
def test_a_replay_asked_for_while_the_broker_is_down_runs_once_it_is_back(
        acme, alice, record, make_run, user_client, broker_on_own_redis):
    run = make_run()
    record(acme, run)
    broker_on_own_redis.stop()
    response = user_client(alice).post("/api/v1/replays/", {
        "run_id": run["run_id"], "tenant": "acme", "mode": "sandbox"}, format="json")
    assert response.status_code in (201, 202), response.content[:500]
    replay = Replay.objects.get(pk=response.json()["id"])
    assert replay.status == "queued"
    [kept] = OutboxMessage.objects.all()
    assert (kept.task, kept.args, kept.task_id) == ("runs.run_replay", [replay.pk],
                                                    replay.task_id)
    assert dispatch_outbox() == {"sent": 0, "failed": 1}  # still down: kept, tried again
    broker_on_own_redis.start()
    assert dispatch_outbox() == {"sent": 1, "failed": 0}
    assert not OutboxMessage.objects.exists()
    assert queued_messages(broker_on_own_redis.url) == 1
    assert dispatch_outbox() == {"sent": 0, "failed": 0}  # nothing sent twice
