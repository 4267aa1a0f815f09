"""Single sign-on in a real browser against a real OpenID provider on loopback: "Sign in with
SSO" on the login page, the provider's form, and back home with the roles the IdP's groups
give; a user in no group is told they hold no role; leaving a group takes its role away at the
next sign-in, in the governance log. Screenshots at 1440x900 and 390x844 beside the role
tours' (``LEDGER_TEST_ARTIFACTS``)."""

from __future__ import annotations

from typing import Any

import pytest

from runs.annotations import GOVERNANCE_RUN_ID
from runs.models import Annotation
from tests.integration.test_role_tours import ARTIFACTS, shoot

pytestmark = pytest.mark.django_db(transaction=True)
SSO_SHOTS = ARTIFACTS.parent / "sso"


def sso_sign_in(browser: Any, live_server: Any, user: str, shot: str) -> Any:
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/admin/login/")
    shoot_sso(page, "login-page")
    page.get_by_role("link", name="Sign in with SSO").click()
    page.fill("#login", user)
    shoot_sso(page, "provider-form")
    page.click("#idp-submit")
    try:
        page.wait_for_url(f"{live_server.url}/")
    except Exception:
        raise AssertionError(f"at {page.url}: {page.content()[:3000]}") from None
    shoot_sso(page, shot)
    return page


def shoot_sso(page: Any, name: str) -> None:
    shoot(page, name, SSO_SHOTS)


def test_sso_roles_follow_the_idp_groups_in_a_browser(browser, live_server, oidc_provider,
                                                      acme):
    alice = sso_sign_in(browser, live_server, "alice", "alice-home")
    assert alice.locator("#panel-approvals").is_visible()  # acme-approvers: approve on acme
    assert "You hold no role" not in alice.content()
    alice.context.close()

    nobody = sso_sign_in(browser, live_server, "nobody", "no-roles-home")
    assert "You hold no role in any tenant yet" in nobody.locator("#content-main").inner_text()
    assert nobody.locator("#panel-approvals").count() == 0
    nobody.context.close()

    oidc_provider.set_groups("alice", ["acme-governors"])
    again = sso_sign_in(browser, live_server, "alice", "alice-home-after-leaving-approvers")
    assert again.locator("#panel-approvals").count() == 0
    again.context.close()
    removal = Annotation.objects.filter(tenant=acme, run__run_id=GOVERNANCE_RUN_ID,
                                        body__startswith="removed role approve").get()
    assert removal.body == ("removed role approve from user alice (single sign-on: IdP groups "
                            "acme-governors)")
    assert removal.data["source"].startswith("single sign-on")


def test_signing_out_of_the_portal_signs_out_of_the_provider_too(browser, live_server,
                                                                  oidc_provider, acme):
    """The next person at the same browser who clicks "Sign in with SSO" meets the provider's
    form, not the previous person's session."""
    from core.models import LoginEvent, LoginMethod

    page = sso_sign_in(browser, live_server, "alice", "alice-home-before-signing-out")
    page.locator("#logout-form button").click()
    # the provider asks before it ends its own session (RP-initiated logout)
    page.get_by_role("button", name="Yes, sign me out").click()
    page.wait_for_url(f"{live_server.url}/admin/login/")
    shoot_sso(page, "signed-out")

    page.get_by_role("link", name="Sign in with SSO").click()
    page.wait_for_selector("#login")  # asked again: no one is signed in at the provider
    page.context.close()
    signed_out = LoginEvent.objects.filter(username="alice", outcome="logout").get()
    assert signed_out.method == LoginMethod.OIDC
