"""Tenant roles from the IdP's groups, applied at every single sign-on.

``LEDGER_OIDC_ROLE_MAP`` maps an IdP group to roles on tenants. At each sign-in the user gets
the roles their groups give and loses the roles their groups gave before and no longer give.
Which roles came from the IdP is recorded (``SsoRoleGrant``): a role granted by hand in the
admin is never removed by a sign-in, and a role the groups give that the user already holds by
hand stays a hand grant (so it outlives the group). Grants and removals go through the role
services, so each is an entry in the tenant's governance log, marked as coming from single
sign-on.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from .governance_record import role_changes_from
from .models import SsoRoleGrant, Tenant, TenantUserObjectPermission
from .roles import Role
from .services import grant_role, revoke_role

log = logging.getLogger(__name__)

RoleMap = Mapping[str, Mapping[str, Iterable[str]]]


def checked_role_map(role_map: Any, name: str = "LEDGER_OIDC_ROLE_MAP") -> RoleMap:
    """``role_map`` if it is {group: {tenant slug: [role, ...]}} with known roles;
    ``ImproperlyConfigured`` naming the bad entry otherwise."""
    if not isinstance(role_map, dict):
        raise ImproperlyConfigured(f"{name} must be a JSON object {{group: {{tenant: [roles]}}}}")
    for group, tenants in role_map.items():
        if not isinstance(tenants, dict):
            raise ImproperlyConfigured(
                f"{name}[{group!r}] must be an object {{tenant: [roles]}}")
        for slug, roles in tenants.items():
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise ImproperlyConfigured(
                    f"{name}[{group!r}][{slug!r}] must be a list of roles")
            unknown = sorted(set(roles) - set(Role.values))
            if unknown:
                raise ImproperlyConfigured(
                    f"{name}[{group!r}][{slug!r}]: unknown roles {', '.join(unknown)} "
                    f"(roles: {', '.join(Role.values)})")
    return role_map


def roles_for_groups(groups: Iterable[str], role_map: RoleMap) -> set[tuple[str, str]]:
    """The (tenant slug, role) pairs ``groups`` give."""
    return {(slug, role) for group in groups for slug, roles in role_map.get(group, {}).items()
            for role in roles}


def groups_of(claims: Mapping[str, Any]) -> list[str]:
    """The groups the configured claim names (a list of names, or one name)."""
    value = claims.get(settings.LEDGER_OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        return [value]
    return [str(group) for group in value if isinstance(group, str | int)]


@transaction.atomic
def apply_sso_roles(user: Any, groups: Iterable[str], role_map: RoleMap | None = None,
                    ) -> tuple[list[str], list[str]]:
    """Make ``user``'s IdP-given roles those ``groups`` give; returns the (granted, removed)
    roles as ``"role on tenant"``. Tenants the map names that do not exist are skipped (logged)."""
    groups = sorted(set(groups))
    wanted = roles_for_groups(groups, checked_role_map(
        settings.LEDGER_OIDC_ROLE_MAP if role_map is None else role_map))
    tenants = {t.slug: t for t in Tenant.objects.filter(slug__in={slug for slug, _ in wanted})}
    for slug in sorted({slug for slug, _ in wanted} - tenants.keys()):
        log.warning("LEDGER_OIDC_ROLE_MAP names tenant %r, which does not exist", slug)
    wanted_rows = {(tenants[slug].pk, role) for slug, role in wanted if slug in tenants}
    from_idp = {(g.tenant_id, g.role): g for g in SsoRoleGrant.objects.select_for_update()
                .filter(user=user).select_related("tenant")}
    held = set(TenantUserObjectPermission.objects.filter(
        user=user, permission__codename__in=Role.values).values_list(
        "content_object_id", "permission__codename"))
    by_pk = {t.pk: t for t in tenants.values()}
    granted, removed = [], []
    with role_changes_from(f"single sign-on: IdP groups {', '.join(groups) or 'none'}"):
        for tenant_id, role in sorted(wanted_rows - held):
            # not held (or removed by hand since): the IdP's groups give it, so it is granted
            grant_role(user, role, by_pk[tenant_id])
            SsoRoleGrant.objects.get_or_create(user=user, tenant_id=tenant_id, role=role)
            granted.append(f"{role} on {by_pk[tenant_id].slug}")
        for key in sorted(from_idp.keys() - wanted_rows):
            grant = from_idp[key]
            if key in held:
                revoke_role(user, grant.role, grant.tenant)
                removed.append(f"{grant.role} on {grant.tenant.slug}")
            grant.delete()
    return granted, removed

