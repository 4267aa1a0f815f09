"""System checks of the tenancy rules (``manage.py check``, run by ``migrate``, ``runserver``
and the test suite): every row that belongs to a tenant is a ``TenantOwned`` model, so it
carries the one tenant scope (``objects.for_user``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.apps import apps
from django.core.checks import Error, Tags, register

#: Models with a foreign key to Tenant that are not tenant-owned rows, and why.
NOT_TENANT_OWNED = {
    # the role grants themselves: the scope is computed from them
    "ledger_portal.TenantUserObjectPermission": "a role grant (defines the scope)",
    "ledger_portal.TenantGroupObjectPermission": "a role grant (defines the scope)",
    # where a user's role grant came from (the IdP's groups): read at sign-in only
    "ledger_portal.SsoRoleGrant": "the source of a role grant",
}


def _points_at_tenant(field: Any) -> bool:
    from .models import Tenant

    return bool(field.concrete and field.many_to_one and field.related_model is Tenant)


def _is_history(model: Any) -> bool:
    """simple-history's copies: read through their instance's admin, which is scoped."""
    return any(field.name == "history_id" for field in model._meta.fields)


@register(Tags.models)
def tenant_owned_models(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    return tenant_owned_errors(apps.get_models())


def tenant_owned_errors(models: Iterable[Any]) -> list[Error]:
    from .models import TenantOwned

    errors = []
    for model in models:
        if model._meta.label in NOT_TENANT_OWNED or _is_history(model):
            continue
        if any(_points_at_tenant(f) for f in model._meta.fields) and not issubclass(
                model, TenantOwned):
            errors.append(Error(
                f"{model._meta.label} has a foreign key to Tenant but does not derive from "
                "TenantOwned, so its rows are outside the one tenant scope.",
                hint="Derive it from core.models.TenantOwned (redeclare `tenant` "
                "for its own related name if needed).",
                obj=model, id="ledger_portal.E001"))
    return errors
