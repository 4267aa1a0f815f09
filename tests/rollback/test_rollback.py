"""Rolling back completed tool calls through their tool's compensate hook, against a real HTTP
tool on loopback: once, idempotent, retried with backoff, outcome recorded and annotated."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from operations.models import Rollback
from operations.rollback import (
    NOT_ATTEMPTED,
    RollbackRefused,
    request_rollback,
    request_run_rollback,
    rollback_key,
)
from runs.models import Annotation, Run, Tool, ToolCall

pytestmark = pytest.mark.usefixtures("eager")


def call(call_id: str) -> ToolCall:
    return ToolCall.objects.select_related("tool").get(call_id=call_id)


@pytest.fixture
def refund_tool(acme, refunds, compensating):
    def make(*answers):
        return compensating(Tool.objects.get(tenant=acme, name="refund_payment"), *answers)
    return make


def roll_back(target, by, captured, **kwargs):
    with captured(execute=True):
        return request_rollback(target, by=by, **kwargs)


def test_a_completed_call_is_compensated_once_with_a_key_derived_from_it(
        acme, alice, refund_tool, tool_server, django_capture_on_commit_callbacks):
    refund_tool((200, {"refund_reversed": "rf-2"}))
    refund = call("run-refunds-c2")

    rollback, queued = roll_back(refund, alice, django_capture_on_commit_callbacks)

    assert queued
    rollback.refresh_from_db()
    assert rollback.status == "succeeded"
    assert rollback.attempts == 1
    assert rollback.outcome == {"refund_reversed": "rf-2"}
    assert rollback.requested_by == alice
    (seen,) = tool_server.requests_to("/refund_payment/compensate")
    assert seen.header("Idempotency-Key") == rollback.idempotency_key == rollback_key(refund)
    assert seen.body == {"input": refund.input, "output": refund.output}
    notes = Annotation.objects.filter(tenant=acme, annotation_kind="rollback",
                                      target_call_id=refund.call_id).order_by("seq")
    assert [n.data["event"] for n in notes] == ["requested", "finished"]
    assert notes[1].run.run_id == "run-refunds"
    assert notes[1].data["status"] == "succeeded"
    assert notes[1].author == alice


def test_a_second_request_returns_the_first_outcome(
        acme, alice, refund_tool, tool_server, django_capture_on_commit_callbacks):
    refund_tool((200, {"refund_reversed": "rf-2"}))
    first, _ = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)

    again, queued = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)

    assert not queued
    assert again.pk == first.pk
    assert again.status == "succeeded"
    assert again.outcome == {"refund_reversed": "rf-2"}
    assert len(tool_server.requests_to("/refund_payment/compensate")) == 1


def test_transient_failures_are_retried_with_backoff_then_succeed(
        acme, alice, refund_tool, tool_server, django_capture_on_commit_callbacks):
    refund_tool((503, {"error": "busy"}), (503, {"error": "busy"}), (200, {"ok": True}))

    rollback, _ = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)

    rollback.refresh_from_db()
    assert rollback.status == "succeeded"
    assert rollback.attempts == 3
    assert [e["result"] for e in rollback.attempt_log] == ["transient", "transient",
                                                           "succeeded"]
    # exponential: 10 ms, then 20 ms (LEDGER_ROLLBACK_BACKOFF_MS = 10)
    assert [e.get("retry_in_s") for e in rollback.attempt_log] == [0.01, 0.02, None]
    keys = {s.header("Idempotency-Key") for s in tool_server.requests_to(
        "/refund_payment/compensate")}
    assert keys == {rollback.idempotency_key}  # every attempt re-sends the same key
    assert len(tool_server.requests_to("/refund_payment/compensate")) == 3


def test_transient_failures_give_up_after_the_attempt_limit(
        acme, alice, refund_tool, settings, django_capture_on_commit_callbacks):
    settings.LEDGER_ROLLBACK_MAX_ATTEMPTS = 3
    refund_tool((503, {"error": "busy"}))
    rollback, _ = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)
    rollback.refresh_from_db()
    assert rollback.status == "failed"
    assert rollback.attempts == 3
    assert "gave up after 3 attempts" in rollback.last_error
    assert "HTTP 503" in rollback.last_error


def test_a_permanent_failure_is_recorded_as_failed_with_the_reason(
        acme, alice, refund_tool, tool_server, django_capture_on_commit_callbacks):
    refund_tool((422, {"error": "refund already settled"}))

    rollback, _ = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)

    rollback.refresh_from_db()
    assert rollback.status == "failed"
    assert rollback.attempts == 1
    assert "HTTP 422" in rollback.last_error
    assert "refund already settled" in rollback.last_error
    note = Annotation.objects.filter(tenant=acme, annotation_kind="rollback").order_by("-id")[0]
    assert note.data["status"] == "failed"
    assert "refund already settled" in note.body
    assert len(tool_server.requests_to("/refund_payment/compensate")) == 1


def test_a_partial_rollback_records_the_side_effects_that_remain(
        acme, alice, refund_tool, django_capture_on_commit_callbacks):
    refund_tool((200, {"reversed": "rf-2", "remaining_side_effects": [
        "customer e-mail confirming the refund was already delivered"]}))

    rollback, _ = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)

    rollback.refresh_from_db()
    assert rollback.status == "partial"
    assert rollback.remaining_side_effects == [
        "customer e-mail confirming the refund was already delivered"]
    note = Annotation.objects.filter(tenant=acme, annotation_kind="rollback").order_by("-id")[0]
    assert note.data["remaining_side_effects"] == rollback.remaining_side_effects


def test_a_tool_without_compensation_is_refused_with_a_clear_message(acme, alice, refunds):
    lookup = call("run-refunds-c1")  # get_customer: no compensate support
    with pytest.raises(RollbackRefused, match="tool get_customer does not support "
                       "compensation"):
        request_rollback(lookup, by=alice)
    refund = call("run-refunds-c2")  # supports rollback, but no compensate endpoint configured
    with pytest.raises(RollbackRefused, match="no compensate endpoint"):
        request_rollback(refund, by=alice)
    assert not Rollback.objects.exists()


def test_only_a_completed_call_can_be_rolled_back(acme, alice, record, compensating):
    from tests.incidents.conftest import run_with_calls

    record(acme, run_with_calls("run-failed", [("refund_payment", "write")], status="failed",
                                supports_rollback=True))
    compensating(Tool.objects.get(tenant=acme, name="refund_payment"))
    with pytest.raises(RollbackRefused, match="only a completed"):
        request_rollback(call("run-failed-c1"), by=alice)


def test_rolling_back_needs_the_operate_role(acme, bob, refund_tool):
    refund_tool()
    with pytest.raises(PermissionDenied):
        request_rollback(call("run-refunds-c2"), by=bob)


def test_a_whole_run_is_rolled_back_latest_call_first(
        acme, alice, refund_tool, tool_server, django_capture_on_commit_callbacks):
    refund_tool((200, {"ok": True}))
    run = Run.objects.get(tenant=acme, run_id="run-refunds")

    with django_capture_on_commit_callbacks(execute=True):
        rollbacks = request_run_rollback(run, by=alice)

    assert [r.tool_call.call_id for r in rollbacks] == [
        "run-refunds-c4", "run-refunds-c3", "run-refunds-c2"]  # the read is not compensable
    assert set(Rollback.objects.values_list("status", flat=True)) == {"succeeded"}
    sent = [s.body["input"]["n"] for s in tool_server.requests_to("/refund_payment/compensate")]
    assert sent == [4, 3, 2]


def test_a_whole_run_rollback_stops_at_the_first_failure(
        acme, alice, refund_tool, tool_server, django_capture_on_commit_callbacks):
    refund_tool((200, {"ok": True}), (422, {"error": "settled"}), (200, {"ok": True}))
    run = Run.objects.get(tenant=acme, run_id="run-refunds")

    with django_capture_on_commit_callbacks(execute=True):
        request_run_rollback(run, by=alice)

    statuses = dict(Rollback.objects.values_list("tool_call__call_id", "status"))
    assert statuses == {"run-refunds-c4": "succeeded", "run-refunds-c3": "failed",
                        "run-refunds-c2": "failed"}
    skipped = Rollback.objects.get(tool_call__call_id="run-refunds-c2")
    assert skipped.attempts == 0
    assert skipped.last_error.startswith(NOT_ATTEMPTED)
    assert len(tool_server.requests_to("/refund_payment/compensate")) == 2

    # never attempted, so it may be asked for again; the failed one returns its outcome
    again, queued = roll_back(call("run-refunds-c2"), alice, django_capture_on_commit_callbacks)
    assert queued
    again.refresh_from_db()
    assert again.status == "succeeded"
    failed, queued = roll_back(call("run-refunds-c3"), alice, django_capture_on_commit_callbacks)
    assert not queued
    assert failed.status == "failed"
