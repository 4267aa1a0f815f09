"""Everything that decides is part of the published version: the engine, OPA's URL, path,
timeout and fallback effect sit on the version next to its default and rules, are covered by
its checksum, and change only through a new draft published by a second person."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from policies.models import Policy, PolicyVersion
from policies.services import PolicyError, create_draft, publish_policy_version
from runs.models import Tool

from .test_opa import decide

UNREACHABLE = "http://127.0.0.1:9"  # nothing listens on the discard port: OPA cannot answer


@pytest.fixture
def dead_opa_policy(acme, alice, dave) -> Policy:
    policy = Policy.objects.create(tenant=acme, name="opa-tools")
    draft = create_draft(policy, by=alice, change_note="delegate to OPA", engine="opa",
                         opa_url=UNREACHABLE, opa_path="agents/tools/decision", opa_timeout_ms=300,
                         opa_fallback_effect="deny")
    publish_policy_version(draft, by=dave)
    Tool.objects.create(tenant=acme, name="send_email", action_class="exfil")
    return policy


def _post_change_page(client: Any, url: str, **changes: Any) -> Any:
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update({f"{prefix}-{key}": value for prefix in ("versions", "rules")
                 for key, value in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"),
                                    ("MIN_NUM_FORMS", "0"), ("MAX_NUM_FORMS", "1000"))})
    data.update(changes)
    return client.post(url, data)


def test_a_governor_cannot_switch_a_published_opa_policy_to_fail_open_in_the_admin(
        acme, alice, dead_opa_policy, client):
    client.force_login(alice)
    version = PolicyVersion.objects.get(policy=dead_opa_policy)
    for url in (reverse("admin:policies_policy_change", args=[dead_opa_policy.pk]),
                reverse("admin:policies_policyversion_change", args=[version.pk])):
        _post_change_page(client, url, opa_fallback_effect="allow", engine="embedded",
                          opa_url="http://127.0.0.1:1", opa_timeout_ms="60000")
    decision = decide(acme)
    assert decision.effect == "deny"
    assert decision.engine == "opa"
    version.refresh_from_db()
    assert (version.engine, version.opa_fallback_effect, version.opa_url) == (
        "opa", "deny", UNREACHABLE)
    assert PolicyVersion.objects.filter(policy=dead_opa_policy).count() == 1


def test_a_published_versions_deciding_settings_cannot_be_saved_changed(dead_opa_policy):
    version = PolicyVersion.objects.get(policy=dead_opa_policy)
    version.opa_fallback_effect = "allow"
    with pytest.raises(Exception, match="immutable"):
        version.save()


def test_the_checksum_covers_every_deciding_setting(acme, alice, dave):
    policy = Policy.objects.create(tenant=acme, name="opa-tools")
    base: dict[str, Any] = {"engine": "opa", "opa_url": UNREACHABLE, "opa_path": "a/b",
                            "opa_timeout_ms": 300, "opa_fallback_effect": "deny"}
    checksums = set()
    changes: list[dict[str, Any]] = [
        {}, {"engine": "embedded"}, {"opa_url": "http://127.0.0.1:10"}, {"opa_path": "a/c"},
        {"opa_timeout_ms": 301}, {"opa_fallback_effect": "allow"}]
    for change in changes:
        draft = create_draft(policy, by=alice, change_note=f"try {change}", **{**base, **change})
        checksums.add(publish_policy_version(draft, by=dave).checksum)
    assert len(checksums) == 6


def test_changing_the_fallback_is_a_new_draft_that_someone_else_publishes(
        acme, alice, dave, dead_opa_policy, client):
    published = PolicyVersion.objects.get(policy=dead_opa_policy)
    draft = create_draft(dead_opa_policy, by=alice, change_note="fail open for the outage")
    assert (draft.engine, draft.opa_url, draft.opa_fallback_effect) == (
        "opa", UNREACHABLE, "deny")  # a draft starts from what is published
    client.force_login(alice)
    url = reverse("admin:policies_policyversion_change", args=[draft.pk])
    assert _post_change_page(client, url, opa_fallback_effect="allow").status_code == 302
    draft.refresh_from_db()
    assert draft.opa_fallback_effect == "allow"
    with pytest.raises(PolicyError):
        publish_policy_version(draft, by=alice)
    assert decide(acme).effect == "deny"  # nothing changed until a second person publishes
    publish_policy_version(draft, by=dave)
    decision = decide(acme)
    assert decision.effect == "allow"
    assert decision.policy_version_id == draft.pk != published.pk


def test_a_draft_naming_opa_needs_its_url_and_path(acme, alice, client):
    draft = create_draft(Policy.objects.create(tenant=acme, name="opa-tools"), by=alice,
                         change_note="opa")
    client.force_login(alice)
    url = reverse("admin:policies_policyversion_change", args=[draft.pk])
    answer = _post_change_page(client, url, engine="opa", opa_url="http://127.0.0.1:8181")
    assert answer.status_code == 200
    assert "both a URL and a decision path" in answer.content.decode()
    draft.refresh_from_db()
    assert draft.engine == "embedded"
