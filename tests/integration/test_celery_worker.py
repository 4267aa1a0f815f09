"""A real Celery worker on Redis seals tenant digests from the beat task's message."""

from __future__ import annotations

import os
import time

import pytest
from django.conf import settings

from runs.integrity import verify_tenant
from runs.models import TenantDigest
from runs.tasks import seal_tenant_digests
from tests.celery_conf import prefork_worker_process, worker_env

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def worker(tmp_path):
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    env = worker_env(LEDGER_DATA_DIR=str(settings.DATA_DIR),
                     LEDGER_EGRESS_ALLOW="127.0.0.1,localhost")  # the loopback tool servers
    # A queue of this test's own, so no other worker on the same Redis takes the message.
    queue = f"test-{os.getpid()}"
    with prefork_worker_process(env, tmp_path / "worker.log", pool="solo",
                                queues=f"{queue},celery"):
        yield queue


def test_the_digest_task_runs_on_a_real_worker(worker, acme, record, make_run):
    record(acme, make_run(), make_run())
    seal_tenant_digests.apply_async(queue=worker)
    deadline = time.monotonic() + 60
    while not TenantDigest.objects.filter(tenant=acme).exists():
        assert time.monotonic() < deadline, "the worker did not seal a digest within 60 s"
        time.sleep(0.2)
    digest = TenantDigest.objects.get(tenant=acme)
    assert len(digest.run_heads) == 2
    report = verify_tenant(acme)
    assert report.intact
    assert report.digests == 1


def test_a_backtest_runs_on_a_real_worker_with_progress(worker, acme, alice, record, make_run):
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from core.services import grant_role
    from policies.backtest import start_backtest
    from policies.models import BackTest, Policy, Rule
    from policies.services import create_draft, publish_policy_version

    record(acme, *[make_run() for _ in range(5)])
    policy = Policy.objects.create(tenant=acme, name="tools")
    publisher = User.objects.create_user("pub")
    grant_role(publisher, "manage_policies", acme)
    publish_policy_version(create_draft(policy, by=alice, change_note="allow"), by=publisher)
    draft = create_draft(policy, by=alice, change_note="deny writes")
    Rule.objects.create(tenant=acme, version=draft, name="no writes",
                        action_classes=["write"], effect="deny")
    test = start_backtest(draft, timezone.now() - timedelta(days=3650),
                          timezone.now() + timedelta(days=1), by=alice)
    deadline = time.monotonic() + 60
    while BackTest.objects.get(pk=test.pk).status in ("queued", "running"):
        assert time.monotonic() < deadline, "the back-test did not finish within 60 s"
        time.sleep(0.2)
    test.refresh_from_db()
    assert test.status == "done", test.error
    assert test.processed == test.total > 0


def test_readyz_turns_ready_when_a_real_worker_runs_its_heartbeat(worker, client):
    from core.tasks import worker_heartbeat

    before = client.get("/readyz")
    assert before.status_code == 503
    assert before.json()["worker"] == "never seen"

    worker_heartbeat.apply_async(queue=worker)
    deadline = time.monotonic() + 60
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "no heartbeat from the worker within 60 s"
        time.sleep(0.2)
    assert client.get("/readyz").json()["worker"] == "ok"
