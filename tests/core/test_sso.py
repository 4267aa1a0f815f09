"""Single sign-on against a real OpenID provider on loopback (tests/oidc/provider.js): the
authorization code flow with PKCE, roles from the IdP's groups at every sign-in (recorded in
the governance log), and the id_tokens the portal must refuse."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from django.contrib.auth.models import User

from core.models import LoginEvent, SsoRoleGrant
from core.services import grant_role
from core.tenancy import has_role
from runs.annotations import GOVERNANCE_RUN_ID
from runs.models import Annotation

pytestmark = pytest.mark.django_db(transaction=True)


def sign_in(client: Any, provider: Any, user: str) -> Any:
    """Click "Sign in with SSO", type ``user`` at the provider, come back: the portal's
    answer to its callback."""
    location = client.get("/oidc/authenticate/")["Location"]
    assert location.startswith(provider.issuer), location
    idp = requests.Session()
    response = idp.get(location, allow_redirects=False)
    for _ in range(10):
        if response.status_code == 200 and 'name="login"' in response.text:
            uid = urlsplit(response.url).path.split("/")[2]
            action = urljoin(response.url, f"/interaction/{uid}/login")
            response = idp.post(action, data={"login": user}, allow_redirects=False)
            continue
        location = urljoin(response.url, response.headers["Location"])
        if location.startswith("http://testserver/"):
            parts = urlsplit(location)
            return client.get(f"{parts.path}?{parts.query}")
        response = idp.get(location, allow_redirects=False)
    raise AssertionError(f"the provider never sent the browser back: {response.status_code}")


def roles_of(username: str, tenant: Any) -> set[str]:
    user = User.objects.get(username=username)
    return {role for role in ("view_ledger", "approve", "manage_policies", "operate", "export")
            if has_role(user, role, tenant)}


def governance_notes(tenant: Any) -> list[str]:
    return list(Annotation.objects.filter(tenant=tenant, run__run_id=GOVERNANCE_RUN_ID)
                .order_by("seq").values_list("body", flat=True))


def test_a_user_in_two_groups_signs_in_with_the_roles_of_both(oidc_provider, acme, client):
    response = sign_in(client, oidc_provider, "alice")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").wsgi_request.user.username == "alice"
    assert roles_of("alice", acme) == {"manage_policies", "view_ledger", "approve"}
    granted = [n for n in governance_notes(acme) if n.startswith("granted role")]
    assert len(granted) == 3
    assert all("user alice (single sign-on: IdP groups acme-approvers, acme-governors)" in n
               for n in granted)
    event = LoginEvent.objects.get()
    assert (event.username, event.method, event.outcome, event.ip) == (
        "alice", "oidc", "success", "127.0.0.1")


def test_a_user_in_no_group_signs_in_to_a_page_that_says_they_hold_no_role(
        oidc_provider, acme, client):
    sign_in(client, oidc_provider, "nobody")
    assert roles_of("nobody", acme) == set()
    assert "You hold no role in any tenant yet" in client.get("/").content.decode()


def test_leaving_a_group_takes_its_role_away_at_the_next_sign_in(oidc_provider, acme, client):
    sign_in(client, oidc_provider, "alice")
    oidc_provider.set_groups("alice", ["acme-governors"])
    client.post("/admin/logout/")
    sign_in(client, oidc_provider, "alice")
    assert roles_of("alice", acme) == {"manage_policies", "view_ledger"}
    assert governance_notes(acme)[-1] == ("removed role approve from user alice (single sign-on:"
                                          " IdP groups acme-governors)")
    assert list(LoginEvent.objects.order_by("pk").values_list("outcome", flat=True)) == [
        "success", "logout", "success"]


def test_a_role_granted_by_hand_outlives_the_groups(oidc_provider, acme, client):
    sign_in(client, oidc_provider, "alice")
    alice = User.objects.get(username="alice")
    grant_role(alice, "export", acme)  # in the admin, by a person
    oidc_provider.set_groups("alice", [])
    sign_in(client, oidc_provider, "alice")
    assert roles_of("alice", acme) == {"export"}
    assert not SsoRoleGrant.objects.filter(user=alice).exists()


def test_a_local_account_of_the_same_name_is_not_taken_over(oidc_provider, acme, client):
    User.objects.create_user("alice", password="pw-for-tests-only", is_staff=True)
    response = sign_in(client, oidc_provider, "alice")
    assert response["Location"] == "/admin/login/"
    assert not client.get("/").wsgi_request.user.is_authenticated
    assert roles_of("alice", acme) == set()
    assert "does not sign in through single sign-on" in LoginEvent.objects.get().reason


@pytest.mark.parametrize(("tamper", "reason"), [
    ({"aud": "another-client"}, "the id_token is for another client (audience)"),
    ({"expired": True}, "the id_token has expired"),
])
def test_an_id_token_the_portal_must_not_trust_is_refused(oidc_provider, acme, client, tamper,
                                                          reason):
    oidc_provider.tamper_next_id_token(**tamper)
    response = sign_in(client, oidc_provider, "alice")
    assert response.status_code == 302
    assert response["Location"] == "/admin/login/"
    assert not client.get("/").wsgi_request.user.is_authenticated
    assert not User.objects.filter(username="alice").exists()
    event = LoginEvent.objects.get()
    assert (event.method, event.outcome, event.reason) == ("oidc", "failure", reason)
    page = client.get("/admin/login/").content.decode()
    assert f"Single sign-on failed: {reason}" in page


def test_a_callback_the_portal_did_not_start_is_refused_and_recorded(oidc_provider, client):
    response = client.get("/oidc/callback/?code=stolen&state=forged")
    assert response["Location"] == "/admin/login/"
    assert LoginEvent.objects.get().reason == "the sign-in was not started here (unknown state)"


def test_the_login_page_offers_single_sign_on(oidc_provider, client):
    page = client.get("/admin/login/").content.decode()
    assert "Sign in with SSO" in page
    assert 'id="id_password"' in page


def test_refused_id_tokens_do_not_lock_the_address_out_of_single_sign_on(oidc_provider, acme,
                                                                        client, settings):
    # the password lockout counts wrong passwords; the provider throttles its own sign-ins
    for _ in range(settings.AXES_FAILURE_LIMIT + 1):
        oidc_provider.tamper_next_id_token(expired=True)
        sign_in(client, oidc_provider, "alice")
    assert sign_in(client, oidc_provider, "alice")["Location"] == "/"
    assert client.get("/").wsgi_request.user.username == "alice"


def test_a_deactivated_account_cannot_sign_in_through_the_provider(oidc_provider, acme, client):
    sign_in(client, oidc_provider, "alice")
    client.post("/admin/logout/")
    User.objects.filter(username="alice").update(is_active=False)
    assert sign_in(client, oidc_provider, "alice")["Location"] == "/admin/login/"
    assert not client.get("/").wsgi_request.user.is_authenticated
    assert LoginEvent.objects.latest("pk").reason == "the account is deactivated"


def test_an_unreachable_provider_is_a_recorded_failure_not_a_server_error(
        oidc_provider, client, settings):
    from tests.oidc_provider import _free_port

    settings.OIDC_ISSUER = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    response = client.get("/oidc/authenticate/")
    assert response["Location"] == "/admin/login/"
    assert LoginEvent.objects.get().reason == "the identity provider could not be reached"
    assert "could not be reached" in client.get("/admin/login/").content.decode()


def test_signing_out_sends_a_single_sign_on_user_to_the_providers_end_session(
        oidc_provider, acme, client):
    sign_in(client, oidc_provider, "alice")
    id_token = client.session["oidc_id_token"]
    response = client.post("/admin/logout/")
    assert response.status_code == 302
    parts = urlsplit(response["Location"])
    assert f"{parts.scheme}://{parts.netloc}" == oidc_provider.issuer
    asked = parse_qs(parts.query)
    assert asked["id_token_hint"] == [id_token]
    assert asked["post_logout_redirect_uri"] == ["http://testserver/admin/login/"]
    assert not client.get("/").wsgi_request.user.is_authenticated  # ours ended first
    # the browser follows that redirect after a form: the page's CSP must let it
    assert f"form-action 'self' {oidc_provider.issuer}" in response["Content-Security-Policy"]


def test_a_password_user_signs_out_here_alone(oidc_provider, acme, client, alice):
    client.force_login(alice, backend="django.contrib.auth.backends.ModelBackend")
    response = client.post("/admin/logout/")
    assert response["Location"] == "/admin/login/"  # not the provider: no session there
    assert not client.get("/").wsgi_request.user.is_authenticated


def test_without_single_sign_on_forms_lead_nowhere_but_here(client):
    policy = client.get("/admin/login/")["Content-Security-Policy"]
    assert "form-action 'self';" in policy
