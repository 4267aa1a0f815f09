"""A portal that is down: the agent goes on, bounded; the records arrive once it is back."""

from __future__ import annotations

from typing import Any

from core.models import Tenant
from runs.integrity import verify_tenant
from runs.models import Run, ToolCall


def work(client: Any, calls: int) -> str:
    with client.run(agent_id="support-bot", goal="work through an outage") as run:
        for i in range(calls):
            with run.tool_call("lookup", action_class="read", input={"i": i}) as call:
                call.output = {"i": i}
    return run.run_id


def test_records_made_while_the_portal_is_down_arrive_when_it_is_back(
        make_client: Any, proxy: Any, acme: Tenant) -> None:
    client = make_client(proxy.url)  # nothing listens there yet: connection refused
    run_id = work(client, 50)

    # The agent finished its run without the portal: nothing got through, nothing was lost.
    assert proxy.connections == 0
    assert not Run.objects.filter(run_id=run_id).exists()
    assert client.flush(timeout=0.3) is False
    stats = client.stats()
    assert stats.retries >= 1
    assert (stats.buffered, stats.delivered, stats.dropped) == (50, 0, 0)

    proxy.up()
    assert client.flush(timeout=30)
    assert client.stats().delivered == 50
    assert ToolCall.objects.filter(run__run_id=run_id).count() == 50
    assert Run.objects.get(run_id=run_id).status == "succeeded"
    assert verify_tenant(acme).intact


def test_a_full_buffer_drops_new_records_instead_of_blocking_the_agent(
        make_client: Any, proxy: Any, acme: Tenant) -> None:
    client = make_client(proxy.url, max_buffered_records=10, enqueue_timeout=0.01)
    run_id = work(client, 50)  # returns: each record waits at most enqueue_timeout

    stats = client.stats()
    assert (stats.enqueued, stats.dropped, stats.buffered) == (10, 40, 10)
    proxy.up()
    assert client.flush(timeout=30)
    # The first ten calls landed; the rest and the run's end wait in the dead-letter file
    # (tests/client/test_dead_letter.py), so the run stays open rather than end with a hole.
    stored = Run.objects.get(run_id=run_id)
    assert stored.status == "running"
    assert [c["input"]["i"] for c in ToolCall.objects.filter(run=stored).order_by("seq")
            .values("input")] == list(range(10))
    assert verify_tenant(acme).intact


def test_the_portal_going_down_mid_run_delays_records_without_losing_or_repeating_them(
        make_client: Any, proxy: Any, acme: Tenant) -> None:
    proxy.up()
    client = make_client(proxy.url)
    with client.run(agent_id="support-bot", goal="outage in the middle") as run:
        for i in range(5):
            with run.tool_call("lookup", action_class="read", input={"i": i}):
                pass
        assert client.flush(timeout=30)
        proxy.down()
        for i in range(5, 10):
            with run.tool_call("lookup", action_class="read", input={"i": i}):
                pass
        assert client.flush(timeout=0.3) is False
        proxy.up()
    assert client.flush(timeout=30)
    stored = Run.objects.get(run_id=run.run_id)
    assert [c["input"]["i"] for c in ToolCall.objects.filter(run=stored).order_by("seq")
            .values("input")] == list(range(10))
    assert stored.status == "succeeded"
    assert verify_tenant(acme).intact


def test_a_batch_whose_reply_was_lost_is_sent_again_and_lands_once(
        make_client: Any, proxy: Any, acme: Tenant) -> None:
    proxy.up()
    proxy.lose_replies = 2
    client = make_client(proxy.url, flush_interval=3600)
    run_id = work(client, 20)
    assert client.flush(timeout=30)
    stats = client.stats()
    assert stats.retries == 2
    assert stats.delivered == 20
    assert proxy.connections == 3  # the same batch, three times
    stored = Run.objects.get(run_id=run_id)
    assert ToolCall.objects.filter(run=stored).count() == 20
    assert stored.last_seq == 21  # 20 calls and the run's end, each once
    assert verify_tenant(acme).intact
