"""Personal access tokens: how a person authenticates the ``ledger`` command.

A token belongs to one user, carries scopes (roles; the user's roles on each tenant are
narrowed to them), expires, can be revoked, and is shown once: only its hash is kept. A command
run with ``LEDGER_TOKEN`` acts as the token's user, and every record it writes names the token
(``alice via token lpt_0a1b2c3d4e5f (#7)``). Issuing and revoking a token are annotated in the
governance log of every tenant where its user holds a role.

Without a token the command refuses, except in local mode (``--local`` with ``--as USER``) for
whoever has shell access to the portal host, which is recorded as such with the OS user and the
host name.
"""

from __future__ import annotations

import getpass
import hmac
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from .actors import Actor, is_person
from .governance_record import record_on_governance_log
from .models import CliActor, PersonalAccessToken, Tenant, hash_api_key, new_credential
from .roles import Role
from .tenancy import tenants_for

TOKEN_PREFIX = "lpt"
DEFAULT_LIFETIME = timedelta(days=90)
MAX_LIFETIME = timedelta(days=366)


class TokenRefused(PermissionDenied):
    pass


def _tenants_of(user: Any) -> list[Tenant]:
    seen: dict[int, Tenant] = {}
    for role in Role.values:
        for tenant in tenants_for(user, role):
            seen.setdefault(tenant.pk, tenant)
    return list(seen.values())


def _annotate_everywhere(user: Any, body: str, data: dict[str, Any], *, by: Actor) -> None:
    for tenant in _tenants_of(user):
        record_on_governance_log(tenant, "configuration", body, by=by, data=data)


def checked_token_request(user: User, scopes: Iterable[str], expires_at: datetime | None,
                          *, by: Actor) -> tuple[list[str], datetime]:
    """The scopes and expiry of a token ``by`` may issue to ``user``; ``TokenRefused`` or
    ``ValidationError`` otherwise."""
    if not is_person(by, user.pk) and not getattr(by, "is_superuser", False):
        raise TokenRefused("a personal access token is issued by its own user")
    if getattr(by, "token_scopes", None) is not None:
        raise TokenRefused("a token cannot issue tokens; sign in to the portal to make one")
    checked = sorted(set(scopes))
    unknown = [s for s in checked if s not in Role.values]
    if not checked or unknown:
        raise ValidationError(f"scopes are roles: {', '.join(Role.values)}"
                              + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
    missing = [s for s in checked if not user.is_superuser and not tenants_for(user, s).exists()]
    if missing:
        raise TokenRefused(f"{user} holds no {', '.join(missing)} role on any tenant")
    now = timezone.now()
    expires_at = expires_at or now + DEFAULT_LIFETIME
    if not now < expires_at <= now + MAX_LIFETIME:
        raise ValidationError("a token expires in the future, within a year")
    return checked, expires_at


@transaction.atomic
def issue_personal_token(user: User, name: str, scopes: Iterable[str], *, by: Actor = None,
                         expires_at: datetime | None = None) -> tuple[PersonalAccessToken, str]:
    """A new token of ``user`` and its raw value, which is never stored nor shown again. Only
    ``user`` (or a superuser, e.g. from the shell) issues it; its scopes are roles ``user``
    holds somewhere; it expires within ``MAX_LIFETIME`` (``DEFAULT_LIFETIME`` unless told)."""
    checked, expires_at = checked_token_request(user, scopes, expires_at, by=by or user)
    prefix, raw = new_credential(TOKEN_PREFIX)
    token = PersonalAccessToken.objects.create(
        user=user, name=name.strip() or "ledger", prefix=prefix, token_hash=hash_api_key(raw),
        scopes=checked, expires_at=expires_at)
    _annotate_everywhere(user, f"personal access token {token.label} issued to {user}",
                         {"event": "token_issued", "token": token.pk, "user": user.username,
                          "scopes": checked, "expires_at": expires_at.isoformat()}, by=by)
    return token, raw


@transaction.atomic
def revoke_personal_token(token: PersonalAccessToken, *, by: Actor) -> PersonalAccessToken:
    if not is_person(by, token.user_id) and not getattr(by, "is_superuser", False):
        raise TokenRefused("only its user (or a superuser) revokes a personal access token")
    locked = PersonalAccessToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        _annotate_everywhere(locked.user, f"personal access token {locked.label} revoked",
                             {"event": "token_revoked", "token": locked.pk,
                              "user": locked.user.username}, by=by)
    return locked


def actor_for_token(raw: str) -> CliActor:
    """The user a raw token acts as, narrowed to its scopes; ``TokenRefused`` says why not."""
    parts = raw.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise TokenRefused("that is not a personal access token (lpt_...)")
    token = PersonalAccessToken.objects.select_related("user").filter(prefix=parts[1]).first()
    if token is None or not hmac.compare_digest(token.token_hash, hash_api_key(raw.strip())):
        raise TokenRefused("unknown personal access token")
    if token.revoked_at is not None:
        raise TokenRefused(f"token {token.label} was revoked")
    if token.expires_at <= timezone.now():
        raise TokenRefused(f"token {token.label} expired")
    if not token.user.is_active:
        raise TokenRefused(f"{token.user} is not an active portal user")
    PersonalAccessToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    actor = CliActor.objects.get(pk=token.user_id)
    actor.acting_via = f"token {token.label}"
    actor.token_scopes = frozenset(token.scopes)
    return actor


def actor_in_local_mode(username: str) -> CliActor:
    """``username``, acting from a shell on the portal host: recorded with the OS user and host."""
    actor = CliActor.objects.filter(username=username, is_active=True).first()
    if actor is None:
        raise TokenRefused(f"no active portal user {username!r}")
    actor.acting_via = f"local mode ({getpass.getuser()}@{socket.gethostname()})"
    return actor
