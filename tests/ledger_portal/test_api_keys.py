"""API keys: shown once, stored hashed, scoped, expiring, revocable, last use recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from ledger_portal.models import ApiKey
from ledger_portal.services import InvalidScope, issue_api_key, revoke_api_key

RUNS = "/api/v1/runs/"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_only_a_hash_of_the_key_is_stored(acme):
    key, raw = issue_api_key(acme, "agent", ["ingest"])
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw not in {stored.key_hash, stored.prefix, *map(str, stored.scopes)}
    assert stored.matches(raw)
    assert not stored.matches(raw + "x")


def test_a_valid_key_authenticates_and_records_its_last_use(acme):
    key, raw = issue_api_key(acme, "agent", ["view_ledger"])
    assert bearer(raw).get(RUNS).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None
    assert key.last_used_ip == "127.0.0.1"


@pytest.mark.parametrize("header", ["Bearer", "Bearer lpk_nope", "Bearer lpk_a_b c",
                                    "Bearer not-a-key"])
def test_malformed_or_unknown_keys_are_401(acme, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get(RUNS).status_code == 401


def test_a_revoked_key_is_refused(acme):
    key, raw = issue_api_key(acme, "agent", ["view_ledger"])
    revoke_api_key(key)
    response = bearer(raw).get(RUNS)
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_an_expired_key_is_refused(acme):
    key, raw = issue_api_key(acme, "agent", ["view_ledger"],
                             expires_at=timezone.now() + timedelta(hours=1))
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = bearer(raw).get(RUNS)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_a_key_acts_only_within_its_scopes(acme):
    _, raw = issue_api_key(acme, "ingest-only", ["ingest"])
    response = bearer(raw).get(reverse("api:run-list"))
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_unknown_or_missing_scopes_are_refused(acme):
    with pytest.raises(InvalidScope, match="teleport"):
        issue_api_key(acme, "agent", ["teleport"])
    with pytest.raises(InvalidScope):
        issue_api_key(acme, "agent", [])


def test_the_admin_shows_a_new_key_once(alice, acme, client):
    client.force_login(alice)
    response = client.post(reverse("admin:ledger_portal_apikey_add"), {
        "tenant": acme.pk, "name": "crawler", "scopes": ["ingest"]})
    assert response.status_code == 200
    raw = response.context["raw_key"]
    assert raw in response.content.decode()
    key = ApiKey.objects.get(name="crawler")
    assert key.matches(raw)
    page = client.get(reverse("admin:ledger_portal_apikey_change", args=[key.pk]))
    assert raw not in page.content.decode()


def test_a_key_cannot_be_issued_for_a_tenant_you_do_not_manage(charlie, acme, client):
    client.force_login(charlie)
    response = client.post(reverse("admin:ledger_portal_apikey_add"), {
        "tenant": acme.pk, "name": "sneaky", "scopes": ["ingest"]})
    assert response.status_code == 200  # the form is shown again with an error
    assert "tenant" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(name="sneaky").exists()


@pytest.fixture
def governor(acme):
    """A governor: manages acme's policies and holds no other role there."""
    from django.contrib.auth.models import User

    from ledger_portal.services import grant_role
    user = User.objects.create_user("gina", password="pw-for-tests-only", is_staff=True)
    grant_role(user, "manage_policies", acme)
    return user


def test_a_person_cannot_grant_a_key_a_scope_they_do_not_hold(governor, acme):
    with pytest.raises(PermissionDenied, match="view_unredacted"):
        issue_api_key(acme, "skeleton", ["view_ledger", "view_unredacted"], by=governor)
    assert not ApiKey.objects.filter(name="skeleton").exists()


def test_a_governor_cannot_mint_an_all_scope_key_in_the_admin(governor, acme, client):
    client.force_login(governor)
    response = client.post(reverse("admin:ledger_portal_apikey_add"), {
        "tenant": acme.pk, "name": "skeleton", "scopes": ["view_ledger", "view_unredacted",
                                                          "export", "manage_policies"]})
    assert response.status_code == 200  # the form is shown again with an error
    assert "scopes" in response.context["adminform"].form.errors
    assert not ApiKey.objects.filter(name="skeleton").exists()


def test_a_person_may_grant_the_scopes_they_hold(governor, acme):
    key, _ = issue_api_key(acme, "policy-bot", ["manage_policies"], by=governor)
    assert key.scopes == ["manage_policies"]
    assert key.created_by == governor


def test_a_new_key_is_never_put_in_the_messages_cookie(alice, acme, client, settings):
    settings.MESSAGE_STORAGE = "django.contrib.messages.storage.cookie.CookieStorage"
    client.force_login(alice)
    response = client.post(reverse("admin:ledger_portal_apikey_add"), {
        "tenant": acme.pk, "name": "crawler", "scopes": ["ingest"]})
    key = ApiKey.objects.get(name="crawler")
    page = response.content.decode()
    raw = next(word for word in page.replace("<", " <").replace(">", "> ").split()
               if word.startswith(f"lpk_{key.prefix}"))
    assert key.matches(raw)
    assert response.status_code == 200  # shown on this response, not after a redirect
    assert response["Cache-Control"].find("no-store") >= 0
    for cookie in response.cookies.values():
        assert key.prefix not in cookie.value
    assert raw not in client.get(reverse("admin:ledger_portal_apikey_changelist")
                                 ).content.decode()
