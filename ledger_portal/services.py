"""Tenancy operations: API keys and roles. Admin, CLI and tests all call these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from .models import ApiKey, Tenant, hash_api_key
from .roles import Role, tenant_perm


class InvalidScope(ValueError):
    pass


def _checked_scopes(scopes: Iterable[str]) -> list[str]:
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in Role.values]
    if unknown:
        raise InvalidScope(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(Role.values)}")
    if not scopes:
        raise InvalidScope("an API key needs at least one scope")
    return scopes


@transaction.atomic
def issue_api_key(tenant: Tenant, name: str, scopes: Iterable[str], *, by: Any = None,
                  expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never stored nor shown again."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("expires_at must be in the future")
    prefix, raw = ApiKey.generate()
    key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=prefix, key_hash=hash_api_key(raw),
        scopes=_checked_scopes(scopes), created_by=by if getattr(by, "pk", None) else None,
        expires_at=expires_at)
    return key, raw


def revoke_api_key(key: ApiKey) -> ApiKey:
    """Revoke a key for good; revoking twice keeps the first time."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def grant_role(holder: Any, role: str, tenant: Tenant) -> None:
    """Give a user or group ``role`` on ``tenant`` (a guardian object permission)."""
    assign_perm(tenant_perm(Role(role).value), holder, tenant)


def revoke_role(holder: Any, role: str, tenant: Tenant) -> None:
    remove_perm(tenant_perm(Role(role).value), holder, tenant)


__all__ = ["Group", "InvalidScope", "grant_role", "issue_api_key", "revoke_api_key",
           "revoke_role"]
