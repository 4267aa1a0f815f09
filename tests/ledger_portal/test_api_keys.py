"""API keys: shown once, stored hashed, scoped, expiring, revocable, last use recorded."""

from __future__ import annotations

from datetime import timedelta

import pytest
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
        "tenant": acme.pk, "name": "crawler", "scopes": ["ingest"]}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"]]
    raw = next(word for m in shown for word in m.split() if word.startswith("lpk_"))
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
