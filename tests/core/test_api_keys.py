"""API keys: shown once, stored hashed, scoped, expiring, revocable, last use recorded."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import ApiKey
from core.services import InvalidScope, issue_api_key, revoke_api_key

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

    from core.services import grant_role
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


@pytest.fixture
def second_governor(acme):
    """Another holder of every role on acme: the second person who confirms a key."""
    from django.contrib.auth.models import User

    from core.roles import Role
    from core.services import grant_role
    user = User.objects.create_user("dora", password="pw-for-tests-only", is_staff=True)
    for role in Role.values:
        grant_role(user, role, acme)
    return user


@pytest.mark.parametrize("scope", ["view_unredacted", "export", "approve", "operate"])
def test_a_sensitive_key_authenticates_nothing_until_a_second_person_confirms_it(
        alice, second_governor, acme, scope):
    from core.services import confirm_api_key
    key, raw = issue_api_key(acme, "reader", ["view_ledger", scope], by=alice)
    response = bearer(raw).get(RUNS)
    assert response.status_code == 401
    assert "confirm" in response.json()["detail"]
    with pytest.raises(PermissionDenied):
        confirm_api_key(key, by=alice)  # the minter is not a second person
    confirm_api_key(key, by=second_governor)
    assert bearer(raw).get(RUNS).status_code == 200


def test_only_a_holder_of_the_sensitive_scopes_confirms_a_key(alice, governor, acme):
    from core.services import confirm_api_key
    key, raw = issue_api_key(acme, "reader", ["view_ledger", "view_unredacted"], by=alice)
    with pytest.raises(PermissionDenied, match="view_unredacted"):
        confirm_api_key(key, by=governor)
    assert bearer(raw).get(RUNS).status_code == 401


def test_a_key_with_ordinary_scopes_needs_no_confirmation(alice, acme):
    _, raw = issue_api_key(acme, "reader", ["view_ledger", "ingest"], by=alice)
    assert bearer(raw).get(RUNS).status_code == 200


def test_the_admin_confirm_action_refuses_the_minter(alice, second_governor, acme, client):
    key, raw = issue_api_key(acme, "reader", ["view_ledger", "export"], by=alice)
    changelist = reverse("admin:ledger_portal_apikey_changelist")
    client.force_login(alice)
    client.post(changelist, {"action": "confirm", "_selected_action": [key.pk]})
    assert bearer(raw).get(RUNS).status_code == 401
    client.force_login(second_governor)
    client.post(changelist, {"action": "confirm", "_selected_action": [key.pk]})
    assert bearer(raw).get(RUNS).status_code == 200


def test_a_key_is_found_by_one_query_built_once_with_its_tenant(acme, monkeypatch):
    """Each API request looks its key up: one statement written once per process, not a
    queryset compiled per request (Django's compiler cost ten times PostgreSQL's answer,
    bench/decisions.py), giving the same key and tenant as the ORM would."""
    from django.db import connection
    from django.db.models.sql.compiler import SQLCompiler
    from django.test import RequestFactory
    from django.test.utils import CaptureQueriesContext
    from rest_framework.request import Request

    from core.api.authentication import ApiKeyAuthentication

    acme.outage_mode = True
    acme.save()
    key, raw = issue_api_key(acme, "agent", ["ingest"], agent_ids=["billing-bot"],
                             expires_at=timezone.now() + timedelta(days=3))

    def authenticate() -> ApiKey:
        request = Request(RequestFactory().get(RUNS, HTTP_AUTHORIZATION=f"Bearer {raw}"))
        found = ApiKeyAuthentication().authenticate(request)
        assert found is not None
        return found[1]

    authenticate()  # the last-use mark: written once an interval
    compiled: list[str] = []
    original = SQLCompiler.as_sql

    def counting(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        compiled.append(self.query.model.__name__ if self.query.model else "?")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SQLCompiler, "as_sql", counting)
    with CaptureQueriesContext(connection) as captured:
        found = authenticate()
        tenant = found.tenant  # loaded with it: no second query
    assert len(captured) == 1, [q["sql"] for q in captured.captured_queries]
    assert compiled == []
    monkeypatch.undo()
    expected = ApiKey.objects.select_related("tenant").get(pk=key.pk)
    fields = [f.attname for f in ApiKey._meta.concrete_fields]
    assert [getattr(found, f) for f in fields] == [getattr(expected, f) for f in fields]
    tenant_fields = [f.attname for f in type(tenant)._meta.concrete_fields]
    assert [getattr(tenant, f) for f in tenant_fields] == [
        getattr(expected.tenant, f) for f in tenant_fields]
    assert tenant.outage_mode is True
    assert found._state.adding is False
    assert found._state.db == "default"
