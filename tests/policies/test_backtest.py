"""Back-testing a draft against recorded tool calls, before publishing it."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from policies.backtest import start_backtest
from policies.models import BackTest, BackTestStatus, Policy, Rule
from policies.services import create_draft
from policies.tasks import run_backtest
from runs.models import ToolCall


def test_a_draft_shows_which_recorded_calls_it_would_decide_differently(
        acme, alice, publish, record, make_run, django_capture_on_commit_callbacks):
    record(acme, *[make_run() for _ in range(8)])
    publish([{"name": "allow all", "effect": "allow"}])
    policy = Policy.objects.get(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="block exfil")
    Rule.objects.create(tenant=acme, version=draft, name="no exfil",
                        action_classes=["exfil"], effect="deny")
    window = (timezone.now() - timedelta(days=3650), timezone.now() + timedelta(days=1))

    with django_capture_on_commit_callbacks(execute=False) as queued:
        test = start_backtest(draft, *window, by=alice)
    assert len(queued) == 1  # the task is enqueued once the request commits
    assert test.status == BackTestStatus.QUEUED

    run_backtest.apply(args=(test.pk,))
    test.refresh_from_db()
    exfil = ToolCall.objects.filter(tenant=acme, action_class="exfil")
    assert test.status == BackTestStatus.DONE
    assert test.total == ToolCall.objects.filter(tenant=acme).count()
    assert test.processed == test.total
    assert test.changed == exfil.count() > 0
    by_tool = {tool: sum(c.values()) for tool, c in test.counts.items()}
    assert by_tool == {t: exfil.filter(tool__name=t).count()
                       for t in exfil.values_list("tool__name", flat=True).distinct()}
    assert all(k == "allow -> deny" for c in test.counts.values() for k in c)
    assert {s["call_id"] for s in test.sample} == set(exfil.values_list("call_id", flat=True))
    assert run_backtest.apply(args=(test.pk,)).result is None  # a second run claims nothing


def test_the_admin_queues_a_backtest_and_shows_its_progress(acme, alice, publish, client,
                                                             django_capture_on_commit_callbacks):
    version = publish([])
    draft = create_draft(version.policy, by=alice, change_note="next")
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("admin:policies_policyversion_changelist"),
                    {"action": "backtest_last_week", "_selected_action": [draft.pk]})
    test = BackTest.objects.get(version=draft)
    page = client.get(reverse("admin:policies_backtest_change", args=[test.pk]))
    assert page.status_code == 200
    assert "0 / 0" in page.content.decode()
