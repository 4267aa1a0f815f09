"""Single sign-on: OpenID Connect's authorization code flow with PKCE, on mozilla-django-oidc.

What this adds to the library: the endpoints come from the issuer's discovery document
(``OIDC_ISSUER``); the id_token's issuer, audience and lifetime are checked (the library checks
the signature and nonce but not ``iss`` or ``aud``, and lets an expired token's error escape as
a server error); the user is found by the IdP's (issuer, subject), never by e-mail; the IdP's
groups become tenant roles at every sign-in (``core.sso_roles``); and every refusal is a failed
login with its reason (``core.login_audit``), shown on the login page.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.generic import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from .models import SsoIdentity
from .sso_roles import apply_sso_roles, groups_of

log = logging.getLogger(__name__)

#: Where the library's settings are read from the discovery document instead.
DISCOVERED = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
#: The request attribute a refusal's reason is left on for the failed-login record.
FAILURE_REASON = "sso_failure_reason"

_discovered: dict[str, dict[str, Any]] = {}
_discovery_lock = threading.Lock()


def discovery(issuer: str) -> dict[str, Any]:
    """The issuer's ``/.well-known/openid-configuration``, fetched once per process."""
    with _discovery_lock:
        if issuer not in _discovered:
            response = requests.get(f"{issuer}/.well-known/openid-configuration",
                                    timeout=getattr(settings, "OIDC_TIMEOUT", 10))
            response.raise_for_status()
            document = response.json()
            if document.get("issuer", "").rstrip("/") != issuer:
                raise ImproperlyConfigured(f"the discovery document of {issuer} names another "
                                           f"issuer ({document.get('issuer')!r})")
            _discovered[issuer] = document
        return _discovered[issuer]


def sso_setting(attr: str, *args: Any) -> Any:
    if attr in DISCOVERED:
        return discovery(settings.OIDC_ISSUER)[DISCOVERED[attr]]
    return import_from_settings(attr, *args)


class SignInRefused(SuspiciousOperation):
    """A sign-in the portal refuses for a reason the person should see."""


class SsoBackend(OIDCAuthenticationBackend):  # type: ignore[misc]
    get_settings = staticmethod(sso_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Django makes a backend for every signed-in request (and the admin's login page): the
        # library would fetch the provider's endpoints there, so a provider that is down would
        # take every page with it. They are fetched when a sign-in needs them.
        self.OIDC_RP_CLIENT_ID = sso_setting("OIDC_RP_CLIENT_ID")
        self.OIDC_RP_CLIENT_SECRET = sso_setting("OIDC_RP_CLIENT_SECRET")
        self.OIDC_RP_SIGN_ALGO = sso_setting("OIDC_RP_SIGN_ALGO", "RS256")
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> Any:
        if request is None or "nonce" not in kwargs or "password" in kwargs:
            return None  # only the callback view signs in with a code; never a password form
        try:
            self.OIDC_OP_TOKEN_ENDPOINT = sso_setting("OIDC_OP_TOKEN_ENDPOINT")
            self.OIDC_OP_USER_ENDPOINT = sso_setting("OIDC_OP_USER_ENDPOINT")
            self.OIDC_OP_JWKS_ENDPOINT = sso_setting("OIDC_OP_JWKS_ENDPOINT")
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, jwt.InvalidTokenError, requests.RequestException) as exc:
            # the library's own refusals (nonce, key, algorithm) say what failed
            reason = str(exc) if isinstance(exc, SuspiciousOperation) else _reason(exc)
            log.warning("single sign-on refused: %s", reason)
            setattr(request, FAILURE_REASON, reason)
            return None

    def _verify_jws(self, payload: bytes, key: Any) -> dict[str, Any]:
        # the library checks the algorithm, the signature and exp, but neither iss nor aud
        alg = jwt.get_unverified_header(payload).get("alg")
        if alg != self.OIDC_RP_SIGN_ALGO:
            raise SignInRefused(f"the id_token is signed with {alg!r}, not "
                                f"{self.OIDC_RP_SIGN_ALGO}")
        return jwt.decode(payload, key, algorithms=[alg], audience=self.OIDC_RP_CLIENT_ID,
                          issuer=settings.OIDC_ISSUER,
                          leeway=getattr(settings, "LEDGER_OIDC_LEEWAY_SECONDS", 60),
                          options={"require": ["iss", "aud", "exp", "iat", "sub"]})

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def get_or_create_user(self, access_token: str, id_token: str, payload: dict[str, Any]) -> Any:
        claims = self.get_userinfo(access_token, id_token, payload)
        try:
            if claims.get("sub") != payload["sub"]:
                raise SignInRefused("the user info is about another subject than the id_token")
            claims = {**payload, **claims}
            with transaction.atomic():
                user = self._user_for(claims)
                granted, removed = apply_sso_roles(user, groups_of(claims))
        except SignInRefused as exc:  # the library logs it and returns None: keep the reason
            setattr(self.request, FAILURE_REASON, str(exc))
            raise
        if granted or removed:
            log.info("single sign-on of %s: granted %s; removed %s", user, granted, removed)
        return user

    def _user_for(self, claims: dict[str, Any]) -> Any:
        identity = SsoIdentity.objects.select_related("user").filter(
            issuer=settings.OIDC_ISSUER, subject=claims["sub"]).first()
        if identity is not None:
            return self.update_user(identity.user, claims)
        username = str(claims.get(settings.LEDGER_OIDC_USERNAME_CLAIM) or claims["sub"])[:150]
        users = get_user_model().objects
        if users.filter(username=username).exists():
            raise SignInRefused(f"the name {username!r} belongs to an account that does not sign "
                                "in through single sign-on")
        user = users.create_user(username, email=claims.get("email") or "", is_staff=True)
        user.set_unusable_password()
        user.save(update_fields=["password"])
        SsoIdentity.objects.create(user=user, issuer=settings.OIDC_ISSUER, subject=claims["sub"])
        return user

    def update_user(self, user: Any, claims: dict[str, Any]) -> Any:
        email = claims.get("email") or ""
        if email and email != user.email:
            user.email = email
            user.save(update_fields=["email"])
        return user


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "the id_token has expired"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "the id_token is for another client (audience)"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "the id_token is from another issuer"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"the identity provider refused the request (HTTP {exc.response.status_code})"
    if isinstance(exc, requests.RequestException):
        return "the identity provider could not be reached"
    return f"the identity provider's answer was refused ({type(exc).__name__})"


class SsoOnly:
    """Single sign-on's pages exist only where it is configured."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.OIDC_ISSUER:
            raise Http404("single sign-on is not configured")
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


class SsoAuthenticationRequestView(SsoOnly, OIDCAuthenticationRequestView):  # type: ignore[misc]
    get_settings = staticmethod(sso_setting)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # the library reads its endpoint when the view is made: on each request, so a portal
        # without single sign-on never asks for a discovery document
        View.__init__(self, *args, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            self.OIDC_OP_AUTH_ENDPOINT = sso_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except (requests.RequestException, ValueError, KeyError) as exc:
            from .login_audit import record_failed_sso

            log.warning("single sign-on: no discovery document from %s: %s",
                        settings.OIDC_ISSUER, exc)
            record_failed_sso(request, "the identity provider could not be reached")
            messages.error(request, "Single sign-on failed: the identity provider could not be "
                                    "reached.")
            return HttpResponseRedirect(sso_setting("LOGIN_REDIRECT_URL_FAILURE", "/"))
        self.OIDC_RP_CLIENT_ID = sso_setting("OIDC_RP_CLIENT_ID")
        return super().get(request)  # type: ignore[no-any-return]


class SsoCallbackView(SsoOnly, OIDCAuthenticationCallbackView):  # type: ignore[misc]
    get_settings = staticmethod(sso_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        started = request.session.get("oidc_states") or {}
        if "code" in request.GET and request.GET.get("state") not in started:
            setattr(request, FAILURE_REASON, "the sign-in was not started here (unknown state)")
            return self._refused(request)
        return super().get(request)  # type: ignore[no-any-return]

    def login_failure(self) -> HttpResponse:
        return self._refused(self.request)

    def _refused(self, request: HttpRequest) -> HttpResponse:
        from .login_audit import record_failed_sso

        user = getattr(self, "user", None)
        reason = getattr(request, FAILURE_REASON, "") or (
            f"the identity provider answered {request.GET['error']}"
            if request.GET.get("error") else "the account is deactivated"
            if user is not None and not user.is_active else "no user for this sign-in")
        if not getattr(request, "sso_failure_recorded", False):
            record_failed_sso(request, reason)
        messages.error(request, f"Single sign-on failed: {reason}.")
        return super().login_failure()  # type: ignore[no-any-return]


def sign_out(request: HttpRequest) -> HttpResponse:
    """The admin's "Log out", which also ends the provider's session for a person who signed
    in with single sign-on (OpenID Connect RP-initiated logout): otherwise the next person at
    the same browser who clicks "Sign in with SSO" is signed in as them without being asked.
    The portal's own session ends first, whatever the provider answers."""
    from django.contrib import admin
    from django.urls import reverse
    from django.utils.http import urlencode

    id_token = request.session.get("oidc_id_token") if settings.OIDC_ISSUER else None
    response: HttpResponse = admin.site.logout(request)
    if not id_token or request.method != "POST" or request.user.is_authenticated:
        return response
    try:
        end_session = discovery(settings.OIDC_ISSUER).get("end_session_endpoint")
    except (requests.RequestException, ValueError) as exc:
        log.warning("single sign-on: no discovery document from %s at sign-out: %s",
                    settings.OIDC_ISSUER, exc)
        return response
    if not end_session:
        return response
    back = request.build_absolute_uri(reverse("admin:login"))
    return HttpResponseRedirect(f"{end_session}?" + urlencode({
        "id_token_hint": id_token, "post_logout_redirect_uri": back,
        "client_id": sso_setting("OIDC_RP_CLIENT_ID")}))
