"""An OTLP span's ``exception`` event keeps its message next to the span status's description
(both say something: the status what failed, the exception why), and the message is ledger
content like any other: redacted where it is read."""

from __future__ import annotations

from django.urls import reverse

from runs.models import ToolCall

from . import spans as s

CARD = "4111 1111 1111 1111"


def test_the_exception_message_is_kept_beside_the_status_and_redacted_when_read(
        acme, alice, otlp_post, user_client):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent payments", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "payments"},
        start_ms=0, end_ms=900)
    charge = s.span(trace_id, "execute_tool charge_card", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "charge_card",
        "gen_ai.tool.call.id": "call_9", "error.type": "CardDeclined"},
        parent=s.sid(root), start_ms=10, end_ms=50, error="the charge failed",
        events=[("exception", {"exception.type": "CardDeclined",
                               "exception.message": f"card {CARD} declined: insufficient funds"})])
    assert otlp_post(acme, s.protobuf(charge, root)).status_code == 200

    call = ToolCall.objects.get(tenant=acme, tool__name="charge_card")
    assert call.error is not None
    assert call.error["message"] == "the charge failed"
    assert call.error["exception_message"] == f"card {CARD} declined: insufficient funds"
    assert call.error["exception_type"] == "CardDeclined"

    shown = user_client(alice).get(reverse("api:toolcall-detail", args=[call.call_id]))
    assert shown.status_code == 200
    assert CARD not in shown.content.decode()
    assert "the charge failed" in shown.content.decode()


def test_a_lone_exception_message_is_the_message(acme, otlp_post):
    trace_id = s.new_trace_id()
    root = s.span(trace_id, "invoke_agent payments", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "payments"},
        start_ms=0, end_ms=900)
    charge = s.span(trace_id, "execute_tool charge_card", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "charge_card",
        "error.type": "Timeout"}, parent=s.sid(root), start_ms=10, end_ms=50,
        events=[("exception", {"exception.message": "no answer in 30 s"})])
    assert otlp_post(acme, s.protobuf(charge, root)).status_code == 200
    error = ToolCall.objects.get(tenant=acme, tool__name="charge_card").error
    assert error is not None
    assert error["message"] == "no answer in 30 s"
    assert "exception_message" not in error
