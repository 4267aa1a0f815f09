"""Rollbacks on the run's timeline (issue #13): a rollback never attempted does not read as a
failed one and may be asked for again; what a partial rollback left behind is shown and leads
to the rollback; each rollback names who asked for it and when."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from operations.models import Rollback
from operations.rollback import request_rollback, request_run_rollback
from runs.models import Run, Tool, ToolCall

pytestmark = pytest.mark.usefixtures("eager")


@pytest.fixture
def refund_tool(acme, refunds, compensating):
    def make(*answers):
        return compensating(Tool.objects.get(tenant=acme, name="refund_payment"), *answers)
    return make


def row_of(page: str, call_id: str) -> str:
    found = re.search(rf'<tr[^>]* id="tool_call-{re.escape(call_id)}".*?</tr>', page, re.S)
    assert found is not None, f"no row for {call_id}"
    return found.group(0)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def timeline(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("run-timeline", args=["acme", "run-refunds"]))
    assert response.status_code == 200
    return str(response.content.decode())


def test_a_rollback_never_attempted_is_not_shown_as_failed_and_may_be_retried(
        acme, alice, refund_tool, client, django_capture_on_commit_callbacks):
    refund_tool((200, {"ok": True}), (422, {"error": "settled"}), (200, {"ok": True}))
    with django_capture_on_commit_callbacks(execute=True):
        request_run_rollback(Run.objects.get(tenant=acme, run_id="run-refunds"), by=alice)
    assert Rollback.objects.get(tool_call__call_id="run-refunds-c2").attempts == 0

    page = timeline(client, alice)
    skipped = row_of(page, "run-refunds-c2")
    assert "not attempted" in text_of(skipped)
    assert "status-failed" not in skipped  # its state is not marked failed
    assert 'class="rollback-button"' in skipped  # its hook never ran: it may be asked again
    failed = row_of(page, "run-refunds-c3")
    assert "status-failed" in failed
    assert 'class="rollback-button"' not in failed  # attempted: asking again returns it


def test_what_a_partial_rollback_left_is_shown_and_leads_to_the_rollback(
        acme, alice, refund_tool, client, django_capture_on_commit_callbacks):
    remains = "customer e-mail confirming the refund was already delivered"
    refund_tool((200, {"reversed": "rf-2", "remaining_side_effects": [remains]}))
    call = ToolCall.objects.get(call_id="run-refunds-c2")
    with django_capture_on_commit_callbacks(execute=True):
        rollback, _ = request_rollback(call, by=alice)
    rollback.refresh_from_db()
    assert rollback.status == "partial"

    row = row_of(timeline(client, alice), "run-refunds-c2")
    assert remains in text_of(row)
    assert f'href="{reverse("admin:operations_rollback_change", args=[rollback.pk])}"' in row


def test_a_rollback_names_who_asked_for_it_and_when(
        acme, alice, refund_tool, client, django_capture_on_commit_callbacks):
    refund_tool((200, {"ok": True}))
    with django_capture_on_commit_callbacks(execute=True):
        rollback, _ = request_rollback(ToolCall.objects.get(call_id="run-refunds-c2"), by=alice)
    rollback.refresh_from_db()
    seen = text_of(row_of(timeline(client, alice), "run-refunds-c2"))
    assert "by alice" in seen
    assert f"{rollback.created_at:%Y-%m-%d %H:%M:%S} UTC" in seen
