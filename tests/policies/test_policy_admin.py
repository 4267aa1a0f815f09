"""Policies in the admin: drafting, editing rules with validated conditions, publishing by
someone else, immutability of what is published, and the side-by-side comparison."""

from __future__ import annotations

from django.urls import reverse

from policies.models import Policy, PolicyVersion, VersionStatus

# What a browser sends for the deciding settings of an embedded-rules version.
EMBEDDED = {"engine": "embedded", "opa_timeout_ms": "500", "opa_fallback_effect": "deny"}


def rules_formset(*rules: dict, prefix: str = "rules") -> dict:
    data = {f"{prefix}-TOTAL_FORMS": str(len(rules)), f"{prefix}-INITIAL_FORMS": "0",
            f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000"}
    for i, rule in enumerate(rules):
        for key, value in {"position": i, "tool": "*", "action_classes": [], "agents": [],
                           "modes": [], "outage": "any", "condition": "", **rule}.items():
            data[f"{prefix}-{i}-{key}"] = value
    return data


def test_draft_edit_publish_and_compare(acme, alice, dave, client):
    policy = Policy.objects.create(tenant=acme, name="tools")
    client.force_login(alice)
    add = client.post(reverse("admin:policies_policyversion_add"),
                      {"policy": policy.pk, "default": "inherit", "change_note": "first rules",
                       **rules_formset()})
    assert add.status_code == 302, add.content
    draft = PolicyVersion.objects.get(policy=policy)
    assert draft.author == alice

    change_url = reverse("admin:policies_policyversion_change", args=[draft.pk])
    bad = client.post(change_url, {**EMBEDDED, "default_effect": "allow",
                                   "change_note": "first rules",
                                   **rules_formset({"name": "typo", "effect": "deny",
                                                    "condition": "tool.nmae == 'x'"})})
    assert bad.status_code == 200
    assert "no field" in bad.content.decode()
    good = client.post(change_url, {**EMBEDDED, "default_effect": "allow",
                                    "change_note": "first rules",
                                    **rules_formset({"name": "no deletes", "effect": "deny",
                                                     "action_classes": ["delete"]})})
    assert good.status_code == 302, good.content
    assert draft.rules.count() == 1

    changelist = reverse("admin:policies_policyversion_changelist")
    own = client.post(changelist, {"action": "publish", "_selected_action": [draft.pk]},
                      follow=True)
    assert "separation of duties" in own.content.decode()
    client.force_login(dave)
    client.post(changelist, {"action": "publish", "_selected_action": [draft.pk]})
    draft.refresh_from_db()
    assert draft.status == VersionStatus.PUBLISHED

    page = client.get(change_url)
    assert page.status_code == 200
    assert 'name="rules-0-name"' not in page.content.decode()  # read-only once published

    client.force_login(alice)
    client.post(reverse("admin:policies_policyversion_add"),
                {"policy": policy.pk, "default": "inherit", "change_note": "second",
                 **rules_formset()})
    second = PolicyVersion.objects.get(policy=policy, number=2)
    assert [r.name for r in second.rules.all()] == ["no deletes"]
    diff = client.get(reverse("admin:policies_policyversion_diff", args=[draft.pk, second.pk]))
    assert diff.status_code == 200
    assert "v1" in diff.content.decode()


def test_another_tenants_versions_cannot_be_compared(acme, globex, alice, charlie, client):
    policy = Policy.objects.create(tenant=acme, name="tools")
    from policies.services import create_draft

    first = create_draft(policy, by=alice, change_note="a")
    second = create_draft(policy, by=alice, change_note="b")
    client.force_login(charlie)
    response = client.get(reverse("admin:policies_policyversion_diff",
                                  args=[first.pk, second.pk]))
    assert response.status_code == 404
