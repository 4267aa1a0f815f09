"""What the login page offers: the password form, single sign-on, or both (settings)."""

from __future__ import annotations

from django import template
from django.conf import settings

register = template.Library()


@register.simple_tag
def sign_in_methods() -> dict[str, bool]:
    return {"password": settings.LEDGER_PASSWORD_LOGIN, "sso": bool(settings.OIDC_ISSUER)}
