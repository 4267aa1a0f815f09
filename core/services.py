"""Tenancy operations: API keys, roles and outage mode. Admin, API, CLI and tests call these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from guardian.shortcuts import assign_perm, remove_perm

from .actors import Actor, is_person, person_of
from .governance_record import PORTAL_AGENT_ID, record_on_governance_log
from .models import ApiKey, Tenant, hash_api_key
from .payload_safety import EXTERNAL_ID_RULE, is_external_id
from .roles import Role, tenant_perm
from .tenancy import forget_roles, has_role


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


def scopes_not_held(scopes: Iterable[str], tenant: Tenant, *, by: Actor) -> list[str]:
    """The scopes among ``scopes`` that ``by`` does not hold on ``tenant`` (a key never
    carries more than the person who mints it may do)."""
    return [scope for scope in scopes if not has_role(by, scope, tenant)]


def _refuse_scopes_not_held(scopes: list[str], tenant: Tenant, *, by: Actor) -> None:
    # ``by`` None is the platform itself (seed, setup, tests); a person or key is held to
    # its own roles, so a governor cannot mint a key that reads what they cannot read.
    if by is None:
        return
    missing = scopes_not_held(scopes, tenant, by=by)
    if missing:
        raise PermissionDenied(f"you cannot grant scope(s) you do not hold on {tenant.slug}: "
                               f"{', '.join(missing)}")


@transaction.atomic
def issue_api_key(tenant: Tenant, name: str, scopes: Iterable[str], *, by: Actor = None,
                  expires_at: datetime | None = None, agent_ids: Iterable[str] = ()
                  ) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never stored nor shown again.
    ``agent_ids`` binds it to those agents (fixed once issued: a wider key is a new key)."""
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("expires_at must be in the future")
    checked = _checked_scopes(scopes)
    bound = checked_agent_ids(agent_ids)
    _refuse_scopes_not_held(checked, tenant, by=by)
    prefix, raw = ApiKey.generate()
    key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=prefix, key_hash=hash_api_key(raw),
        scopes=checked, created_by=person_of(by),
        expires_at=expires_at, agent_ids=bound,
        # The platform itself (by None: seed, setup) and keys without a sensitive scope need
        # no second person; a person's sensitive key waits for confirm_api_key.
        confirmed_at=None if by is not None and sensitive_scopes(checked) else timezone.now())
    return key, raw


def checked_agent_ids(agent_ids: Iterable[str]) -> list[str]:
    """``agent_ids`` as a key binding: real agent ids (the ledger's id rule, not the portal's
    own agent), each once, in order. ``ValueError`` names the first bad one."""
    checked: list[str] = []
    for agent_id in agent_ids:
        if not is_external_id(agent_id):
            raise ValueError(f"{agent_id!r} is not an agent id: an id is {EXTERNAL_ID_RULE}")
        if agent_id == PORTAL_AGENT_ID:
            raise ValueError(f"{agent_id!r} is the portal's own agent; no key acts for it")
        if agent_id not in checked:
            checked.append(agent_id)
    return checked


# Scopes that read unredacted data, take data out, clear calls or act on tools: a key holding
# one is a standing power, so a second person confirms it before it authenticates anything.
SENSITIVE_SCOPES = (Role.VIEW_UNREDACTED, Role.EXPORT, Role.APPROVE, Role.OPERATE)


def sensitive_scopes(scopes: Iterable[str]) -> list[str]:
    return [scope for scope in scopes if scope in SENSITIVE_SCOPES]


@transaction.atomic
def confirm_api_key(key: ApiKey, *, by: Actor) -> ApiKey:
    """Confirm a pending key as the second person: not its minter, holding every sensitive
    scope it carries on its tenant. Confirming a confirmed key changes nothing."""
    locked = ApiKey.objects.select_for_update().get(pk=key.pk)
    if locked.confirmed_at is not None:
        return locked
    person = person_of(by)
    if person is None:
        raise PermissionDenied("a key is confirmed by a person, not by another key")
    if is_person(person, locked.created_by_id):
        raise PermissionDenied("the person who minted a key cannot confirm it")
    missing = scopes_not_held(sensitive_scopes(locked.scopes), locked.tenant, by=by)
    if missing:
        raise PermissionDenied(f"confirming this key needs the role(s) {', '.join(missing)} on "
                               f"{locked.tenant.slug}")
    locked.confirmed_by, locked.confirmed_at = person, timezone.now()
    locked.save(update_fields=["confirmed_by", "confirmed_at"])
    key.confirmed_by, key.confirmed_at = locked.confirmed_by, locked.confirmed_at
    return locked


def revoke_api_key(key: ApiKey) -> ApiKey:
    """Revoke a key for good; revoking twice keeps the first time."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def grant_role(holder: Any, role: str, tenant: Tenant) -> None:
    """Give a user or group ``role`` on ``tenant`` (a guardian object permission)."""
    assign_perm(tenant_perm(Role(role).value), holder, tenant)
    forget_roles(holder)


def revoke_role(holder: Any, role: str, tenant: Tenant) -> None:
    remove_perm(tenant_perm(Role(role).value), holder, tenant)
    forget_roles(holder)


# Outage mode changes what every policy decides (rules match on it) and forces replays into
# sandbox: a governance decision, made by those who manage the tenant's policies.
OUTAGE_ROLE = Role.MANAGE_POLICIES
OUTAGE_REASON_MAX = 2_000


@transaction.atomic
def set_outage_mode(tenant: Tenant, *, by: Actor, on: bool, reason: str) -> Any:
    """Put ``tenant`` in outage mode (replays forced to sandbox; leaving it needs an approved
    HITL request) or take it out, recording who and why in the tenant's governance log in the
    same transaction. Returns that annotation, or None when the tenant already was in that
    mode (nothing is written).

    Raises ``PermissionDenied`` without the manage_policies role on the tenant and
    ``ValidationError`` without a reason.
    """
    if not has_role(by, OUTAGE_ROLE, tenant):
        raise PermissionDenied(f"switching outage mode needs the {OUTAGE_ROLE} role on "
                               f"{tenant.slug}")
    reason = (reason or "").strip()
    if not reason:
        raise ValidationError("say why outage mode changes (the incident, the outage, who "
                              "decided)")
    if len(reason) > OUTAGE_REASON_MAX or "\x00" in reason:
        raise ValidationError(f"the reason must be plain text of at most {OUTAGE_REASON_MAX} "
                              "characters")
    [locked] = Tenant.objects.filter(pk=tenant.pk).lock_rows()
    if locked.outage_mode == on:
        tenant.outage_mode = on
        return None
    locked.outage_mode = on
    locked._change_reason = f"outage mode {'on' if on else 'off'}"[:100]  # type: ignore[attr-defined]
    if person_of(by) is not None:
        locked._history_user = by  # type: ignore[attr-defined]
    locked.save(update_fields=["outage_mode"])
    tenant.outage_mode = on
    what = ("on: replays run in sandbox only; a live replay needs an approved request to "
            "leave sandbox" if on else "off: live replays follow the usual approvals again")
    return record_on_governance_log(locked, "override", f"Outage mode {what}. Reason: {reason}",
                    by=by, data={"event": "outage_mode", "outage_mode": on, "reason": reason,
                                 "tenant": locked.slug})


__all__ = [
    "OUTAGE_ROLE",
    "SENSITIVE_SCOPES",
    "Group",
    "InvalidScope",
    "confirm_api_key",
    "grant_role",
    "issue_api_key",
    "revoke_api_key",
    "revoke_role",
    "scopes_not_held",
    "sensitive_scopes",
    "set_outage_mode",
]
