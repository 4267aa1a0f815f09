"""The Django settings single sign-on needs, made from the few the deployer gives
(``ledger_portal/settings.py`` reads them from the environment; the tests make the same set
for their own provider)."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

PASSWORD_BACKEND = "django.contrib.auth.backends.ModelBackend"
SSO_BACKEND = "core.sso.SsoBackend"


def authentication_backends(backends: list[str], *, sso: bool, password: bool) -> list[str]:
    """``backends`` with single sign-on's after the lockout check, and without the password
    backend when password sign-in is off."""
    if not password and not sso:
        raise ImproperlyConfigured("LEDGER_PASSWORD_LOGIN=0 needs OIDC_ISSUER (nobody could "
                                   "sign in)")
    chosen = [b for b in backends if b != SSO_BACKEND and (password or b != PASSWORD_BACKEND)]
    if sso:
        chosen.insert(1, SSO_BACKEND)  # after axes, which refuses a locked-out sign-in first
    return chosen


def oidc_settings(issuer: str, client_id: str, client_secret: str, *, scopes: str,
                  sign_algo: str = "RS256", timeout: int = 10, leeway: int = 60) -> dict[str, Any]:
    """mozilla-django-oidc's settings for ``issuer`` (its endpoints come from discovery)."""
    if not client_id:
        raise ImproperlyConfigured("OIDC_ISSUER needs OIDC_CLIENT_ID")
    return {
        "OIDC_ISSUER": issuer.rstrip("/"),
        "OIDC_RP_CLIENT_ID": client_id,
        "OIDC_RP_CLIENT_SECRET": client_secret,
        "OIDC_RP_SCOPES": scopes,
        "OIDC_RP_SIGN_ALGO": sign_algo,
        "OIDC_USE_PKCE": True,
        # kept in the session for the provider's logout (id_token_hint), core.sso.sign_out
        "OIDC_STORE_ID_TOKEN": True,
        "OIDC_TIMEOUT": timeout,
        # seconds of clock difference with the IdP tolerated on an id_token's exp and iat
        "LEDGER_OIDC_LEEWAY_SECONDS": leeway,
        "OIDC_AUTHENTICATE_CLASS": "core.sso.SsoAuthenticationRequestView",
        "OIDC_CALLBACK_CLASS": "core.sso.SsoCallbackView",
        "LOGIN_REDIRECT_URL": "home",
        "LOGIN_REDIRECT_URL_FAILURE": "/admin/login/",  # the refusal is a message there
        "LOGOUT_REDIRECT_URL": "admin:login",
    }
