"""On PostgreSQL: concurrent requests compensate once; a real Celery worker on Redis retries
transient failures with backoff and walks a whole run latest first."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.db import connection

from operations.models import Rollback
from operations.rollback import request_rollback, request_run_rollback
from runs.models import Run, Tool, ToolCall
from tests.integration.test_celery_worker import worker  # noqa: F401  (the worker fixture)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def refund_tool(acme, refunds, compensating):
    def make(*answers):
        return compensating(Tool.objects.get(tenant=acme, name="refund_payment"), *answers)
    return make


def test_two_concurrent_requests_compensate_once_and_get_the_same_rollback(
        acme, alice, refund_tool, tool_server, eager):
    refund_tool((200, {"ok": True}))
    call = ToolCall.objects.get(call_id="run-refunds-c2")
    start = threading.Barrier(2)
    results: list[tuple[int, bool]] = []
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            start.wait(timeout=10)
            rollback, queued = request_rollback(call, by=alice)  # its own connection
            results.append((rollback.pk, queued))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len({pk for pk, _ in results}) == 1  # both got the same rollback
    assert sorted(queued for _, queued in results) == [False, True]
    assert Rollback.objects.get().status == "succeeded"
    assert len(tool_server.requests_to("/refund_payment/compensate")) == 1


@pytest.fixture
def fast_backoff(monkeypatch):
    # read by the worker subprocess, which starts after this fixture
    monkeypatch.setenv("LEDGER_ROLLBACK_BACKOFF_MS", "100")


def wait_until_finished(ids: list[int], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while Rollback.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists():
        assert time.monotonic() < deadline, "the worker did not finish the rollbacks in time"
        time.sleep(0.2)


def test_a_real_worker_retries_transient_failures_then_succeeds(
        fast_backoff, worker, acme, alice, refund_tool, tool_server):  # noqa: F811
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    refund_tool((503, {"error": "busy"}), (503, {"error": "busy"}), (200, {"ok": True}))
    rollback, _ = request_rollback(ToolCall.objects.get(call_id="run-refunds-c2"), by=alice)
    wait_until_finished([rollback.pk])
    rollback.refresh_from_db()
    assert rollback.status == "succeeded", rollback.last_error
    assert rollback.attempts == 3
    assert [e.get("retry_in_s") for e in rollback.attempt_log] == [0.1, 0.2, None]
    seen = tool_server.requests_to("/refund_payment/compensate")
    assert [s.header("Idempotency-Key") for s in seen] == [rollback.idempotency_key] * 3


def test_a_real_worker_rolls_back_a_whole_run_latest_first(
        worker, acme, alice, refund_tool, tool_server):  # noqa: F811
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    refund_tool((200, {"ok": True}))
    rollbacks = request_run_rollback(Run.objects.get(tenant=acme, run_id="run-refunds"), by=alice)
    wait_until_finished([r.pk for r in rollbacks])
    assert set(Rollback.objects.values_list("status", flat=True)) == {"succeeded"}
    sent = [s.body["input"]["n"] for s in tool_server.requests_to("/refund_payment/compensate")]
    assert sent == [4, 3, 2]
