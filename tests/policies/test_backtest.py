"""Back-testing a draft against recorded tool calls, before publishing it."""

from __future__ import annotations

from datetime import timedelta

import pytest
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
    changed_by_tool = {tool: row["changed"] for tool, row in test.counts.items()
                       if row["changed"]}
    assert changed_by_tool == {t: exfil.filter(tool__name=t).count()
                               for t in exfil.values_list("tool__name", flat=True).distinct()}
    assert set(test.changes.values_list("before", "after")) == {("allow", "deny")}
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


WINDOW = (timezone.now() - timedelta(days=3650), timezone.now() + timedelta(days=1))


def _other_policy_denies_exfil(acme, alice, dave):
    from policies.services import publish_policy_version

    guard = Policy.objects.create(tenant=acme, name="guard")
    draft = create_draft(guard, by=alice, change_note="no exfil", default_effect="")
    Rule.objects.create(tenant=acme, version=draft, name="no exfil", action_classes=["exfil"],
                        effect="deny")
    publish_policy_version(draft, by=dave)


def test_an_unchanged_copy_changes_nothing_while_another_policy_is_published(
        acme, alice, dave, publish, record, make_run):
    """The "after" side is what the tenant would decide with the draft published: the draft
    in place of its policy's published version, beside every other published policy."""
    record(acme, *[make_run() for _ in range(8)])
    tools = publish([{"name": "allow all", "effect": "allow"}])
    _other_policy_denies_exfil(acme, alice, dave)
    copy = create_draft(tools.policy, by=alice, change_note="no change")

    test = start_backtest(copy, *WINDOW, by=alice)
    run_backtest.apply(args=(test.pk,))
    test.refresh_from_db()

    assert test.status == BackTestStatus.DONE
    assert test.processed == ToolCall.objects.filter(tenant=acme).count() > 0
    assert test.changed == 0
    assert not test.changes.exists()


def test_each_tool_shows_its_calls_before_and_after_and_every_changed_call_is_kept(
        acme, alice, publish, record, make_run):
    record(acme, *[make_run() for _ in range(8)])
    tools = publish([{"name": "allow all", "effect": "allow"}])
    draft = create_draft(tools.policy, by=alice, change_note="block exfil")
    Rule.objects.create(tenant=acme, version=draft, name="no exfil", position=0,
                        action_classes=["exfil"], effect="deny")

    test = start_backtest(draft, *WINDOW, by=alice)
    run_backtest.apply(args=(test.pk,))
    test.refresh_from_db()

    calls = ToolCall.objects.filter(tenant=acme)
    for tool, row in test.counts.items():
        of_tool = calls.filter(tool__name=tool)
        assert row["calls"] == of_tool.count()
        assert row["before"] == {"allow": of_tool.count()}
        denied = of_tool.filter(action_class="exfil").count()
        assert row["after"] == {k: v for k, v in {"allow": of_tool.count() - denied,
                                                  "deny": denied}.items() if v}
        assert row["changed"] == denied
    exfil = calls.filter(action_class="exfil")
    assert set(test.changes.values_list("call_id", flat=True)) == set(
        exfil.values_list("call_id", flat=True))
    change = test.changes.order_by("id")[0]
    assert (change.before, change.after) == ("allow", "deny")
    assert set(change.rules) == {"no exfil", "allow all"}  # the draft's rules that matched


def test_a_backtest_can_be_narrowed_to_agents_and_tools(acme, alice, publish, record,
                                                        make_run):
    record(acme, *[make_run() for _ in range(8)])
    tools = publish([{"name": "allow all", "effect": "allow"}])
    draft = create_draft(tools.policy, by=alice, change_note="deny everything")
    draft.default_effect = "deny"
    draft.save()
    draft.rules.all().delete()
    calls = ToolCall.objects.filter(tenant=acme)
    agent, tool = calls.values_list("run__agent__agent_id", "tool__name")[0]

    test = start_backtest(draft, *WINDOW, by=alice, agents=[agent], tools=[tool])
    run_backtest.apply(args=(test.pk,))
    test.refresh_from_db()

    narrowed = calls.filter(run__agent__agent_id=agent, tool__name=tool)
    assert test.total == test.changed == narrowed.count() < calls.count()
    assert set(test.counts) == {tool}


def test_a_governor_chooses_the_window_agents_and_tools_and_reads_every_changed_call(
        acme, globex, alice, publish, record, make_run, client):
    record(acme, *[make_run() for _ in range(8)])
    record(globex, make_run("globex"))
    tools = publish([{"name": "allow all", "effect": "allow"}])
    draft = create_draft(tools.policy, by=alice, change_note="block exfil")
    Rule.objects.create(tenant=acme, version=draft, name="no exfil", action_classes=["exfil"],
                        effect="deny")
    exfil = ToolCall.objects.filter(tenant=acme, action_class="exfil").select_related(
        "tool", "run")
    tool = exfil[0].tool.name
    client.force_login(alice)
    form_url = reverse("admin:policies_policyversion_backtest", args=[draft.pk])

    form = client.get(form_url).content.decode()
    assert f'value="{tool}"' in form
    assert not any(f'value="{name}"' in form for name in ToolCall.objects.filter(
        tenant=globex).exclude(tool__name__in=ToolCall.objects.filter(tenant=acme).values(
            "tool__name")).values_list("tool__name", flat=True))  # no other tenant's tools
    backwards = client.post(form_url, {"window_from": "2026-12-01T10:00",
                                       "window_to": "2026-11-01T10:00"})
    assert "The window must end after it starts." in backwards.content.decode()
    assert not BackTest.objects.exists()  # nothing half-written

    response = client.post(form_url, {"window_from": "2000-01-01T00:00",
                                      "window_to": "2100-01-01T00:00", "tools": [tool]})
    test = BackTest.objects.get(version=draft)
    assert response.status_code == 302
    assert test.tools == [tool]
    run_backtest.apply(args=(test.pk,))

    page = client.get(reverse("admin:policies_backtest_change", args=[test.pk])).content.decode()
    for call in exfil.filter(tool__name=tool):
        assert f"/runs/acme/{call.run.run_id}/#tool_call-{call.call_id}" in page
    assert "allow → deny" in page
    assert 'id="backtest-tools"' in page


def test_another_tenants_backtest_is_a_404(acme, globex, alice, charlie, publish, client):
    version = publish([])
    test = start_backtest(create_draft(version.policy, by=alice, change_note="x"), *WINDOW,
                          by=alice)
    client.force_login(charlie)
    assert client.get(reverse("admin:policies_backtest_change", args=[test.pk])
                      ).status_code == 404
    assert client.get(reverse("admin:policies_policyversion_backtest", args=[test.version_id])
                      ).status_code == 404


def test_only_a_governor_of_the_tenant_backtests(acme, alice, bob, charlie, publish):
    from django.core.exceptions import PermissionDenied

    draft = create_draft(publish([]).policy, by=alice, change_note="x")
    for outsider in (bob, charlie):  # ingest only on acme; every role, but on globex
        with pytest.raises(PermissionDenied):
            start_backtest(draft, *WINDOW, by=outsider)
    assert not BackTest.objects.exists()


def test_a_backtest_is_no_oracle_for_arguments_the_governor_sees_redacted(
        acme, alice, publish, record, make_run):
    """A draft rule probing a secret in the arguments, back-tested: the calls are decided on
    the arguments as the governor may see them, so the result tells nothing of the secret."""
    secret = "sk_live_Au7h0rS3cr3tV4lu3xyz1234"
    run = make_run()
    run["tool_calls"][0]["input"] = {"amount_cents": 25_000, "token": secret}
    record(acme, run)
    tools = publish([{"name": "allow all", "effect": "allow"}])
    probe = create_draft(tools.policy, by=alice, change_note="probe")
    Rule.objects.create(tenant=acme, version=probe, name="probe", effect="deny",
                        condition=f"has(args.token) && args.token.startsWith('{secret[:9]}')")
    Rule.objects.create(tenant=acme, version=probe, name="big", effect="deny",
                        condition="has(args.amount_cents) && args.amount_cents > 20000")

    test = start_backtest(probe, *WINDOW, by=alice)
    run_backtest.apply(args=(test.pk,))
    test.refresh_from_db()

    assert test.redacted_calls >= 1
    changed = test.changes.get(call_id=run["tool_calls"][0]["call_id"])
    assert "big" in changed.rules  # the amount is seen
    assert "probe" not in changed.rules  # the token is not: the probe learns nothing
