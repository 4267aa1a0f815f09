"""Authoring policies in the admin: rules edited with choices (not JSON), a draft's default
effect chosen when it is added (kept from the published version unless chosen), a draft that
says what it was copied from, conditions checked as typed and tried on a recorded call (on the
arguments as the author may see them), and two versions compared rule by rule."""

from __future__ import annotations

import pytest
from django.urls import reverse

from policies.models import Policy, PolicyVersion, Rule
from policies.services import create_draft
from runs.models import Agent, ToolCall
from tests.policies.test_policy_admin import EMBEDDED, rules_formset

SECRET = "sk_live_Au7h0rS3cr3tV4lu3xyz1234"


def _try(client, version, condition, call_id=""):
    return client.post(reverse("admin:policies_policyversion_try_condition",
                               args=[version.pk]), {"condition": condition,
                                                    "call_id": call_id}).json()


@pytest.fixture
def recorded(acme, record, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = {"amount_cents": 25_000, "token": SECRET}
    record(acme, run)
    return ToolCall.objects.get(tenant=acme, call_id=run["tool_calls"][0]["call_id"])


def test_a_condition_is_checked_as_typed_and_tried_on_a_recorded_call(
        acme, alice, publish, recorded, client):
    draft = create_draft(publish([]).policy, by=alice, change_note="caps")
    client.force_login(alice)

    assert _try(client, draft, "args.amount_cents >")["problems"]
    assert "no field" in _try(client, draft, "tool.nmae == 'x'")["problems"][0]
    assert _try(client, draft, "args.amount_cents > 10000")["problems"] == []
    tried = _try(client, draft, "args.amount_cents > 10000", recorded.call_id)
    assert tried["outcome"] == "matches"
    assert tried["call"]["run_id"] == recorded.run.run_id
    assert _try(client, draft, "args.amount_cents > 90000", recorded.call_id)[
        "outcome"] == "does not match"
    assert "has no" in _try(client, draft, "args.currency == 'EUR'", recorded.call_id)[
        "outcome"]


def test_trying_a_condition_reveals_nothing_redacted_about_the_arguments(
        acme, alice, publish, recorded, client):
    """A governor who may not see the token cannot test guesses of it through the preview."""
    draft = create_draft(publish([]).policy, by=alice, change_note="probe")
    client.force_login(alice)
    for guess in (f"args.token == '{SECRET}'", f"args.token.startsWith('{SECRET[:10]}')"):
        tried = _try(client, draft, guess, recorded.call_id)
        assert tried["outcome"] == "does not match", guess
        assert tried["redacted"] is True
    assert SECRET not in str(_try(client, draft, "true", recorded.call_id))


def test_no_trying_on_another_tenants_calls_or_versions(
        acme, globex, alice, charlie, publish, record, make_run, client):
    theirs = make_run("globex")
    record(globex, theirs)
    draft = create_draft(publish([]).policy, by=alice, change_note="x")
    client.force_login(alice)
    assert _try(client, draft, "true", theirs["tool_calls"][0]["call_id"])["outcome"].startswith(
        "no recorded call")
    client.force_login(charlie)
    response = client.post(reverse("admin:policies_policyversion_try_condition",
                                   args=[draft.pk]), {"condition": "true"})
    assert response.status_code == 404


def test_rules_are_edited_with_choices_and_offer_only_the_tenants_agents(
        acme, globex, alice, publish, client):
    Agent.objects.create(tenant=acme, agent_id="billing-bot")
    Agent.objects.create(tenant=globex, agent_id="globex-secret-bot")
    draft = create_draft(publish([]).policy, by=alice, change_note="x")
    client.force_login(alice)
    url = reverse("admin:policies_policyversion_change", args=[draft.pk])
    saved = client.post(url, {**EMBEDDED, "default_effect": "allow", "change_note": "x",
                              **rules_formset({"name": "bots", "effect": "deny",
                                               "action_classes": ["exfil", "delete"],
                                               "modes": ["live"],
                                               "agents": ["billing-bot"]})})
    assert saved.status_code == 302, saved.content.decode()[-2000:]
    rule = Rule.objects.get(version=draft)
    assert (sorted(rule.action_classes), rule.modes, rule.agents) == (
        ["delete", "exfil"], ["live"], ["billing-bot"])
    page = client.get(url).content.decode()
    assert 'type="checkbox" name="rules-0-action_classes" value="exfil"' in page
    assert '<option value="billing-bot" selected>' in page
    assert "globex-secret-bot" not in page
    assert "rule_conditions.js" in page


def test_the_add_form_keeps_the_published_default_unless_one_is_chosen(
        acme, alice, publish, client):
    published = publish([], default="deny")
    client.force_login(alice)
    add = reverse("admin:policies_policyversion_add")
    page = client.get(add).content.decode()
    assert 'name="default"' in page
    client.post(add, {"policy": published.policy_id, "default": "inherit",
                      "change_note": "keep", **rules_formset()})
    client.post(add, {"policy": published.policy_id, "default": "require_approval",
                      "change_note": "ask", **rules_formset()})
    client.post(add, {"policy": published.policy_id, "default": "abstain",
                      "change_note": "abstain", **rules_formset()})
    drafts = dict(PolicyVersion.objects.filter(status="draft").values_list(
        "change_note", "default_effect"))
    assert drafts == {"keep": "deny", "ask": "require_approval", "abstain": ""}
    missing = client.post(add, {"policy": published.policy_id, "change_note": "none",
                                **rules_formset()})
    assert missing.status_code == 200  # asked again, not defaulted silently
    assert not PolicyVersion.objects.filter(change_note="none").exists()


def test_a_draft_says_what_it_was_copied_from_and_links_the_comparison(
        acme, alice, publish, client):
    published = publish([{"name": "no deletes", "effect": "deny",
                          "action_classes": ["delete"]}])
    draft = create_draft(published.policy, by=alice, change_note="next")
    assert draft.based_on == published
    first = create_draft(Policy.objects.create(tenant=acme, name="fresh"), by=alice,
                         change_note="first")
    client.force_login(alice)
    page = client.get(reverse("admin:policies_policyversion_change", args=[draft.pk]))
    text = page.content.decode()
    assert f"v{published.number}</a> (published, published when this was drafted)" in text
    assert reverse("admin:policies_policyversion_diff", args=[published.pk, draft.pk]) in text
    fresh = client.get(reverse("admin:policies_policyversion_change", args=[first.pk]))
    assert "the policy&#x27;s first version" in fresh.content.decode()


def test_two_versions_compare_rule_by_rule(acme, alice, publish, client):
    published = publish([{"name": "no deletes", "effect": "deny", "action_classes": ["delete"]},
                         {"name": "refunds", "tool": "refund_*", "effect": "require_approval"},
                         {"name": "old rule", "tool": "legacy_*", "effect": "deny"}])
    draft = create_draft(published.policy, by=alice, change_note="next")
    draft.rules.filter(name="refunds").update(condition="args.amount_cents > 10000")
    draft.rules.filter(name="old rule").delete()
    Rule.objects.create(tenant=acme, version=draft, name="no exfil", action_classes=["exfil"],
                        effect="deny")
    draft.default_effect = "deny"
    draft.save()
    client.force_login(alice)
    page = client.get(reverse("admin:policies_policyversion_diff",
                              args=[published.pk, draft.pk])).content.decode()
    assert 'class="rule-changed" data-rule="refunds"' in page
    assert 'class="rule-added" data-rule="no exfil"' in page
    assert 'class="rule-removed" data-rule="old rule"' in page
    assert 'class="rule-unchanged" data-rule="no deletes"' in page
    assert '<dd class="differs">args.amount_cents &gt; 10000</dd>' in page
    assert "<td>default_effect</td><td>allow</td><td>deny</td>" in page
