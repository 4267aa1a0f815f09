"""Every manual intervention on a governance object is an annotation in the tenant's governance
log with who, when and the before/after diff, whichever entry point made it: the admin, a
service, or a shell session. Agents and tools first seen in a batch are the portal's own
bookkeeping and are not."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.urls import reverse

from core.services import issue_api_key, revoke_api_key
from runs.annotations import GOVERNANCE_RUN_ID
from runs.integrity import verify_tenant
from runs.models import Annotation, AnnotationKind, Tool


def log_of(tenant: Any) -> list[Annotation]:
    return list(Annotation.objects.filter(
        tenant=tenant, run__run_id=GOVERNANCE_RUN_ID,
        annotation_kind=AnnotationKind.CONFIGURATION).order_by("seq"))


def test_a_tool_edited_in_the_admin_is_on_the_record_with_its_diff(acme, alice, client):
    client.force_login(alice)
    response = client.post(reverse("admin:runs_tool_add"), {
        "tenant": acme.pk, "name": "refund_payment", "action_class": "write",
        "connector": "http", "endpoint": "http://127.0.0.1:9/refund", "timeout_ms": 1000,
        "dry_run_via": "none", "dry_run_concurrency": 1, "secret_ref": ""}, follow=False)
    assert response.status_code == 302, response.content.decode()[:2000]
    tool = Tool.objects.get(tenant=acme, name="refund_payment")
    created = log_of(acme)[-1]
    assert created.body == "created tool registry entry refund_payment"
    assert created.author == alice
    assert created.data["changes"]["action_class"] == [None, "write"]
    # the endpoint waits for a second manager (a governed change); a shell session that
    # writes the row itself is on the record all the same
    tool.endpoint = "http://127.0.0.1:10/refund"
    tool.save()
    changed = log_of(acme)[-1]
    assert changed.body == "changed tool registry entry refund_payment"
    assert changed.data["changes"] == {"endpoint": ["", "http://127.0.0.1:10/refund"]}
    assert verify_tenant(acme).intact


def test_tenant_settings_changes_are_recorded(acme, db, client):
    root = User.objects.create_superuser("root", password="pw-for-tests-only")
    client.force_login(root)
    response = client.post(reverse("admin:ledger_portal_tenant_change", args=[acme.pk]), {
        "slug": "acme", "name": "Acme", "approval_escalate_minutes": 5,
        "approval_timeout_minutes": 240, "retention_days": 30,
        "unregistered_tools": "require_approval", "batch_unknown_fields": "lenient"})
    assert response.status_code == 302
    entry = log_of(acme)[-1]
    assert entry.author == root
    assert entry.data["changes"] == {"approval_escalate_minutes": [30, 5],
                                     "retention_days": [None, 30],
                                     "batch_unknown_fields": ["strict", "lenient"]}


def test_api_keys_are_recorded_without_their_hash(acme, alice):
    key, raw = issue_api_key(acme, "billing-agent", ["ingest"], by=alice)
    revoke_api_key(key)
    created, revoked = log_of(acme)[-2:]
    assert created.body == "created API key " + str(key)
    assert "key_hash" not in created.data["changes"]
    assert raw not in str(created.data)
    assert key.key_hash not in str(created.data)
    assert revoked.body == "changed API key " + str(key)
    assert list(revoked.data["changes"]) == ["revoked_at"]


def test_role_grants_and_removals_are_recorded_with_who_granted(acme, db, client):
    root = User.objects.create_superuser("root", password="pw-for-tests-only")
    erin = User.objects.create_user("erin", password="pw-for-tests-only", is_staff=True)
    client.force_login(root)
    url = reverse("admin:ledger_portal_tenant_permissions_manage_user", args=[acme.pk, erin.pk])
    client.post(url, {"permissions": ["view_ledger", "approve"]})
    client.post(url, {"permissions": ["view_ledger"]})
    entries = [(e.body, e.author) for e in log_of(acme)]
    assert ("granted role approve to user erin", root) in entries
    assert ("granted role view_ledger to user erin", root) in entries
    assert entries[-1] == ("removed role approve from user erin", root)


def test_agents_and_tools_first_seen_in_a_batch_are_not_interventions(acme, record, make_run):
    record(acme, make_run())
    assert log_of(acme) == []
