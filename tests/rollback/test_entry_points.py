"""Every way to ask for a rollback reaches the same service: the API, the CLI, the admin
action, the timeline page's buttons and the incident (which links both ways). The watchdog
fails rollbacks stuck past their time limit."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from core.cli_support import EXIT_OK, EXIT_USAGE
from incidents.services import incident_timeline, open_incident
from ledger_portal.cli import main
from operations.models import Rollback
from operations.rollback import fail_stuck_rollbacks, request_rollback
from runs.models import Annotation, Tool, ToolCall

pytestmark = pytest.mark.usefixtures("eager")


@pytest.fixture
def refund_tool(acme, refunds, compensating):
    return compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                        (200, {"ok": True}))


def test_the_api_queues_a_rollback_and_a_second_post_returns_the_first(
        acme, refund_tool, key_client, tool_server, django_capture_on_commit_callbacks):
    client = key_client(acme, ["view_ledger", "operate"])
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c2"},
                            format="json")
    assert first.status_code == 202, first.content
    (row,) = first.json()["rollbacks"]
    detail = client.get(reverse("api:rollback-detail", kwargs={"rollback_id": row["id"]}))
    assert detail.json()["status"] == "succeeded"
    assert detail.json()["attempts"] == 1

    second = client.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c2"},
                         format="json")
    assert second.status_code == 200
    assert second.json()["queued"] is False
    assert second.json()["rollbacks"][0]["id"] == row["id"]
    assert second.json()["rollbacks"][0]["status"] == "succeeded"
    assert len(tool_server.requests_to("/refund_payment/compensate")) == 1


def test_the_api_refuses_a_tool_without_compensation_and_needs_operate(
        acme, refund_tool, key_client):
    client = key_client(acme, ["view_ledger", "operate"])
    refused = client.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c1"},
                          format="json")
    assert refused.status_code == 400
    assert "does not support compensation" in refused.json()["detail"]
    reader = key_client(acme, ["view_ledger"])
    assert reader.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c2"},
                       format="json").status_code == 403


def test_ledger_rollback_rolls_back_a_whole_run_for_an_incident(
        acme, alice, refund_tool, capsys, django_capture_on_commit_callbacks):
    incident = open_incident(acme, "Double refunds", by=alice)
    with django_capture_on_commit_callbacks(execute=True):
        code = main(["--as", "alice", "rollback", "--run-id", "run-refunds", "--tenant", "acme",
                     "--incident", str(incident.pk)])
    assert code == EXIT_OK
    out = capsys.readouterr().out
    assert [line.split("\t")[1] for line in out.splitlines()] == [
        "run-refunds-c4", "run-refunds-c3", "run-refunds-c2"]
    assert set(Rollback.objects.values_list("status", flat=True)) == {"succeeded"}
    assert set(incident.rollbacks.values_list("tool_call__call_id", flat=True)) == {
        "run-refunds-c4", "run-refunds-c3", "run-refunds-c2"}
    assert main(["--as", "alice", "rollback", "--call-id", "run-refunds-c1"]) == EXIT_USAGE


def test_rolling_back_from_an_incident_links_both_ways(
        acme, alice, refund_tool, django_capture_on_commit_callbacks):
    incident = open_incident(acme, "Double refunds", by=alice)
    call = ToolCall.objects.get(call_id="run-refunds-c3")
    with django_capture_on_commit_callbacks(execute=True):
        rollback, _ = request_rollback(call, by=alice, incident=incident)

    rollback.refresh_from_db()
    assert rollback.incident == incident  # the rollback records the incident
    assert list(incident.rollbacks.all()) == [rollback]  # the incident lists the rollback
    assert list(incident.tool_calls.all()) == [call]
    events = [a.data["event"] for a in incident_timeline(incident)]
    assert events == ["opened", "requested", "linked_call", "escalated", "finished"]
    finished = Annotation.objects.get(annotation_kind="rollback", data__event="finished")
    assert finished.data["incident"] == incident.reference


def test_the_incident_page_rolls_back_a_linked_call(
        acme, alice, refund_tool, client, django_capture_on_commit_callbacks):
    from incidents.services import link_to_incident

    incident = open_incident(acme, "Double refunds", by=alice)
    link_to_incident(incident, by=alice, call_ids=["run-refunds-c2"])
    client.force_login(alice)
    page = client.get(reverse("incident-page", args=["acme", incident.pk]))
    assert b'value="run-refunds-c2"' in page.content
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("incident-act", args=["acme", incident.pk]),
                    {"action": "rollback", "call_id": "run-refunds-c2"})
    assert incident.rollbacks.get().status == "succeeded"


def test_the_admin_action_rolls_back_the_selected_calls(
        acme, alice, refund_tool, client, django_capture_on_commit_callbacks):
    client.force_login(alice)
    calls = ToolCall.objects.filter(call_id__in=["run-refunds-c1", "run-refunds-c2"])
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("admin:runs_toolcall_changelist"), {
            "action": "roll_back", "_selected_action": [c.pk for c in calls]}, follow=True)
    shown = [str(m) for m in response.context["messages"]]
    assert any("run-refunds-c1: tool get_customer does not support" in m for m in shown)
    assert any("run-refunds-c2: rollback" in m and "queued" in m for m in shown)
    assert Rollback.objects.get().tool_call.call_id == "run-refunds-c2"


def test_the_timeline_page_offers_roll_back_buttons_to_operators_only(
        acme, alice, bob, refund_tool, client, django_capture_on_commit_callbacks):
    from core.services import grant_role

    page_url = reverse("run-timeline", args=["acme", "run-refunds"])
    client.force_login(alice)
    page = client.get(page_url).content.decode()
    assert page.count('class="rollback-button"') == 3
    assert 'id="rollback-run"' in page
    with django_capture_on_commit_callbacks(execute=True):
        client.post(reverse("run-rollback", args=["acme", "run-refunds"]),
                    {"call_id": "run-refunds-c4"})
    page = client.get(page_url).content.decode()
    assert page.count('class="rollback-button"') == 2
    rolled_back = Rollback.objects.get(tool_call__call_id="run-refunds-c4")
    assert (f'rollback {rolled_back.pk}</a>: <span class="status status-succeeded">succeeded'
            in page)

    grant_role(bob, "view_ledger", acme)
    client.force_login(bob)
    assert "rollback-button" not in client.get(page_url).content.decode()
    client.post(reverse("run-rollback", args=["acme", "run-refunds"]),
                {"call_id": "run-refunds-c3"})
    assert Rollback.objects.count() == 1  # bob may look, not roll back


def test_a_rollback_stuck_past_its_time_limit_is_marked_failed_with_the_reason(
        acme, alice, refund_tool, settings, django_capture_on_commit_callbacks):
    call = ToolCall.objects.get(call_id="run-refunds-c2")
    with django_capture_on_commit_callbacks(execute=False):  # queued; no worker takes it
        rollback, _ = request_rollback(call, by=alice)
    later = timezone.now() + timedelta(seconds=settings.LEDGER_ROLLBACK_TIME_LIMIT + 1)
    assert fail_stuck_rollbacks(timezone.now()) == 0
    assert fail_stuck_rollbacks(later) == 1
    rollback.refresh_from_db()
    assert rollback.status == "failed"
    assert "stuck queued for more than" in rollback.last_error
    assert rollback.idempotency_key in rollback.last_error
    assert fail_stuck_rollbacks(later) == 0
