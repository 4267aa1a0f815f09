"""``/readyz`` says whether queued work would be picked up: the database, the broker, and a
worker that ran its heartbeat recently. Pages and commands showing a job still queued say the
same when no worker is alive, instead of waiting forever."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import WorkerHeartbeat
from core.tasks import worker_heartbeat
from core.workers import stuck_message
from tests.celery_conf import celery_conf

pytestmark = pytest.mark.django_db


def test_no_worker_ever_seen_is_not_ready(client):
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["worker"] == "never seen"
    assert answer.json()["database"] == "ok"
    assert "no-store" in answer["Cache-Control"]


def test_a_worker_that_ran_its_heartbeat_makes_it_ready_without_naming_the_host(client):
    with celery_conf(task_always_eager=True):
        hostname = worker_heartbeat.apply_async().get()
    answer = client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"
    assert answer.json()["worker_heartbeat_age_seconds"] <= 1
    assert hostname not in answer.content.decode()


def test_a_heartbeat_older_than_the_limit_is_stale(client, settings):
    WorkerHeartbeat.objects.create(
        hostname="celery@old", seen_at=timezone.now() - timedelta(
            seconds=settings.LEDGER_WORKER_STALE_SECONDS + 5))
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["worker"] == "stale"


def test_a_broker_that_does_not_answer_is_not_ready(client):
    WorkerHeartbeat.objects.create(hostname="celery@now", seen_at=timezone.now())
    with celery_conf(broker_url="redis://127.0.0.1:9/0"):  # nothing listens on port 9
        answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["broker"] == "unavailable"


def test_a_young_queued_job_or_a_live_worker_needs_no_warning():
    now = timezone.now()
    assert stuck_message(now - timedelta(seconds=10), now) == ""
    WorkerHeartbeat.objects.create(hostname="celery@now", seen_at=now)
    assert stuck_message(now - timedelta(minutes=10), now) == ""


def test_a_job_queued_a_while_with_no_worker_says_what_to_start():
    now = timezone.now()
    message = stuck_message(now - timedelta(seconds=75), now)
    assert message.startswith("no worker has picked this up for 75 s")
    assert "make worker" in message
