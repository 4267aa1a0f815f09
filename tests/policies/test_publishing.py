"""Versions: drafts become immutable when published, publishing retires the previous one,
authors cannot publish their own version, and every publication is annotated."""

from __future__ import annotations

import pytest

from core.canonical import content_hash
from policies.models import Policy, PolicyVersion, VersionStatus
from policies.services import (
    PolicyError,
    create_draft,
    publish_policy_version,
    version_content,
)
from runs.annotations import GOVERNANCE_RUN_ID
from runs.integrity import verify_tenant
from runs.models import Annotation

# What a browser sends for the deciding settings of an embedded-rules version.
EMBEDDED = {"engine": "embedded", "opa_timeout_ms": "500", "opa_fallback_effect": "deny"}


def test_publishing_retires_the_previous_version_and_annotates(acme, publish):
    first = publish([{"name": "deny deletes", "action_classes": ["delete"], "effect": "deny"}])
    second = publish([{"name": "deny exfil", "action_classes": ["exfil"], "effect": "deny"}])
    first.refresh_from_db()
    assert first.status == VersionStatus.RETIRED
    assert first.retired_at is not None
    assert second.status == VersionStatus.PUBLISHED
    assert second.checksum == content_hash(version_content(second))
    notes = Annotation.objects.filter(tenant=acme, run__run_id=GOVERNANCE_RUN_ID,
                                      annotation_kind="policy_change").order_by("seq")
    assert [n.data["version"] for n in notes] == [first.number, second.number]
    assert notes[1].data["retired"] == [first.number]
    assert notes[1].author_label == "dave"
    assert verify_tenant(acme).intact  # the governance log is chained like any run


def test_the_author_cannot_publish_their_own_version(acme, alice):
    policy = Policy.objects.create(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="mine")
    with pytest.raises(PolicyError, match="separation of duties"):
        publish_policy_version(draft, by=alice)
    draft.refresh_from_db()
    assert draft.status == VersionStatus.DRAFT


def test_only_drafts_are_published(publish, dave):
    version = publish([])
    with pytest.raises(PolicyError, match="only drafts"):
        publish_policy_version(version, by=dave)


def test_a_bad_condition_blocks_publication(acme, alice, dave):
    from policies.models import Rule

    policy = Policy.objects.create(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="typo")
    Rule.objects.create(tenant=acme, version=draft, name="typo", condition="tool.nmae == 'x'",
                        effect="deny")
    with pytest.raises(PolicyError, match="no field 'nmae'"):
        publish_policy_version(draft, by=dave)


def test_a_new_draft_starts_from_the_published_rules(acme, alice, publish):
    published = publish([{"name": "deny deletes", "action_classes": ["delete"],
                          "effect": "deny"}])
    draft = create_draft(published.policy, by=alice, change_note="next")
    assert draft.number == published.number + 1
    assert [r.name for r in draft.rules.all()] == ["deny deletes"]
    assert PolicyVersion.objects.filter(policy=published.policy).count() == 2


def test_a_published_version_is_immutable(acme, publish):
    from django.core.exceptions import ValidationError

    from policies.models import Rule

    version = publish([{"name": "deny deletes", "action_classes": ["delete"], "effect": "deny"}])
    rule = version.rules.get()
    rule.effect = "allow"
    with pytest.raises(ValidationError, match="cannot change"):
        rule.save()
    with pytest.raises(ValidationError, match="cannot change"):
        Rule.objects.create(tenant=acme, version=version, name="sneaky", effect="allow")
    version.default_effect = "deny"
    with pytest.raises(ValidationError, match="immutable"):
        version.save()


def test_rule_edits_of_a_draft_keep_history(acme, alice):
    from policies.models import Rule

    policy = Policy.objects.create(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="history")
    rule = Rule.objects.create(tenant=acme, version=draft, name="r", effect="deny")
    rule.effect = "require_approval"
    rule.save()
    assert list(rule.history.order_by("history_date").values_list("effect", flat=True)) == [
        "deny", "require_approval"]


def test_whoever_edited_a_draft_cannot_publish_it(acme, alice, dave):
    """Four eyes means two people who did not write it: editing someone else's draft, then
    publishing it yourself, is refused, whether the edit came through the admin or a shell."""
    from policies.models import Rule

    policy = Policy.objects.create(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="alice's rules")
    rule = Rule.objects.create(tenant=acme, version=draft, name="no deletes",
                               action_classes=["delete"], effect="deny")
    rule.effect = "allow"
    rule._history_user = dave  # type: ignore[attr-defined]  # dave loosens alice's rule
    rule.save()
    with pytest.raises(PolicyError, match="edited"):
        publish_policy_version(draft, by=dave)
    draft.refresh_from_db()
    assert draft.status == "draft"


def test_an_edit_of_the_draft_itself_in_the_admin_bars_its_editor(acme, alice, dave, client):
    policy = Policy.objects.create(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="alice's draft")
    client.force_login(dave)
    url = f"/admin/policies/policyversion/{draft.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    form = {**EMBEDDED, "default_effect": "allow", "change_note": "dave's edit",
            "rules-TOTAL_FORMS": "0", "rules-INITIAL_FORMS": "0",
            "rules-MIN_NUM_FORMS": "0", "rules-MAX_NUM_FORMS": "1000"}
    assert client.post(url, form).status_code == 302
    response = client.post("/admin/policies/policyversion/", {
        "action": "publish", "_selected_action": [draft.pk]}, follow=True)
    assert "edited" in response.content.decode()
    draft.refresh_from_db()
    assert draft.status == "draft"
