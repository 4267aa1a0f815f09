"""History -> Revert is not offered on what is immutable or moves through a state machine:
a published policy version and a revoked exception can be looked at in their history, never
reverted (the page offers no Revert, and a POST is refused cleanly, without a 500 or a false
"changed successfully")."""

from __future__ import annotations

from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from policies.exceptions import request_exception, revoke_exception
from policies.models import ExceptionStatus, PolicyVersion, VersionStatus


def _history_form(model: str, obj) -> str:
    history_id = obj.history.earliest().history_id
    return reverse(f"admin:policies_{model}_simple_history", args=[obj.pk, history_id])


def test_a_published_version_offers_no_revert_and_refuses_one(publish, alice, client):
    version = publish([{"name": "no deletes", "effect": "deny",
                        "action_classes": ["delete"]}])
    client.force_login(alice)
    url = _history_form("policyversion", version)
    page = client.get(url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    before = PolicyVersion.objects.get(pk=version.pk)
    answer = client.post(url, {"default_effect": "deny", "change_note": "sneaky"})
    assert answer.status_code == 403
    after = PolicyVersion.objects.get(pk=version.pk)
    assert (after.status, after.default_effect, after.checksum) == (
        VersionStatus.PUBLISHED, before.default_effect, before.checksum)


def test_a_revoked_exception_offers_no_revert_and_refuses_one(publish, acme, alice, dave,
                                                              client):
    version = publish([])
    now = timezone.now()
    exc = request_exception(acme, by=alice, tool="refund", policy_version=version,
                            justification="incident 7", starts_at=now,
                            ends_at=now + timedelta(hours=1))
    revoke_exception(exc, by=dave)
    client.force_login(alice)
    url = _history_form("governedexception", exc)
    page = client.get(url)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    answer = client.post(url, {"justification": "reverted"})
    assert answer.status_code == 403
    exc.refresh_from_db()
    assert exc.status == ExceptionStatus.REVOKED


def test_the_history_list_offers_revert_on_a_draft_only_and_reads_in_the_tenant_scope(
        publish, alice, client):
    """The history list is read through the tenant scope (the scope guard fails a test whose
    request reads a tenant's rows unscoped: this page did, joining the policy)."""
    from policies.services import create_draft

    version = publish([{"name": "no deletes", "effect": "deny", "action_classes": ["delete"]}])
    draft = create_draft(version.policy, by=alice, change_note="next")
    client.force_login(alice)
    pages = {obj.status: client.get(reverse("admin:policies_policyversion_history",
                                            args=[obj.pk])).content.decode()
             for obj in (version, draft)}
    assert "to revert to" not in pages[VersionStatus.PUBLISHED]
    assert "to revert to" in pages[VersionStatus.DRAFT]
