"""The one tenant scope every queryset goes through.

``tenants_for(user, role)`` answers "which tenants may this principal act on with this role";
``TenantScopedQuerySet.for_user`` narrows any tenant-owned queryset to them with a subquery, so
the admin, the API, pages, the CLI and tasks share one rule. Superusers see every tenant; an API
key sees its own tenant for the scopes it carries; everyone else sees the tenants where they (or
one of their groups) hold the role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from django.db import models

if TYPE_CHECKING:
    from .models import Tenant

M = TypeVar("M", bound=models.Model)


def tenants_for(user: Any, role: str, base: models.QuerySet[Tenant] | None = None
                ) -> models.QuerySet[Tenant]:
    from .models import Tenant, TenantGroupObjectPermission, TenantUserObjectPermission

    tenants = base if base is not None else Tenant.objects.all()
    if user is None or not getattr(user, "is_authenticated", False):
        return tenants.none()
    api_key_tenant = getattr(user, "api_key_tenant_id", None)
    if api_key_tenant is not None:
        if role not in user.scopes:
            return tenants.none()
        return tenants.filter(pk=api_key_tenant)
    if not user.is_active:
        return tenants.none()
    token_scopes = getattr(user, "token_scopes", None)
    if token_scopes is not None and role not in token_scopes:
        return tenants.none()  # a personal access token narrows its user's roles
    if user.is_superuser:
        return tenants
    perm = {"permission__codename": role, "permission__content_type__app_label": "ledger_portal"}
    direct = TenantUserObjectPermission.objects.filter(user=user, **perm).values("content_object")
    via_group = TenantGroupObjectPermission.objects.filter(
        group__user=user, **perm
    ).values("content_object")
    return tenants.filter(models.Q(pk__in=direct) | models.Q(pk__in=via_group))


def has_role(user: Any, role: str, tenant: Tenant | int | None = None) -> bool:
    """Whether ``user`` holds ``role`` on ``tenant`` (or on any tenant when None)."""
    tenants = tenants_for(user, role)
    if tenant is None:
        return tenants.exists()
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    return tenants.filter(pk=tenant_id).exists()


class TenantScopedQuerySet(models.QuerySet[M]):
    def for_user(self, user: Any, role: str) -> TenantScopedQuerySet[M]:
        api_key_tenant = getattr(user, "api_key_tenant_id", None)
        if api_key_tenant is not None:
            # One tenant, known without a query.
            if role not in user.scopes:
                return self.none()
            return self.filter(tenant_id=api_key_tenant)
        token_scopes = getattr(user, "token_scopes", None)
        if token_scopes is not None and role not in token_scopes:
            return self.none()
        if getattr(user, "is_superuser", False) and user.is_active:
            return self
        return self.filter(tenant_id__in=tenants_for(user, role).values("pk"))

    def for_tenant(self, tenant: Tenant | int) -> TenantScopedQuerySet[M]:
        return self.filter(tenant=tenant)


def roles_of(user: Any) -> dict[str, frozenset[int]]:
    """Every role the user holds, directly or through a group: role -> tenant ids (one query).
    Not for superusers, who hold every role everywhere."""
    from .models import TenantGroupObjectPermission, TenantUserObjectPermission

    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return {}
    direct = TenantUserObjectPermission.objects.filter(user=user).values_list(
        "permission__codename", "content_object_id")
    via_group = TenantGroupObjectPermission.objects.filter(group__user=user).values_list(
        "permission__codename", "content_object_id")
    found: dict[str, set[int]] = {}
    token_scopes = getattr(user, "token_scopes", None)
    for role, tenant_id in direct.union(via_group):
        if token_scopes is None or role in token_scopes:
            found.setdefault(role, set()).add(tenant_id)
    return {role: frozenset(ids) for role, ids in found.items()}
