"""Every row that belongs to a tenant is a ``TenantOwned`` model and carries the one tenant
scope: ``manage.py check`` refuses a model with a tenant foreign key that is not (policy rules,
which had no scope of their own, are checked in tests/policies/test_rules_tenant_scoped.py)."""

from __future__ import annotations

from django.apps import apps
from django.apps.registry import Apps
from django.core import checks
from django.db import models

from core.checks import tenant_owned_errors
from core.models import Tenant, TenantOwned


def test_every_model_with_a_tenant_foreign_key_is_tenant_owned():
    assert tenant_owned_errors(apps.get_models()) == []
    assert [e for e in checks.run_checks() if e.id == "ledger_portal.E001"] == []


def test_the_check_refuses_a_model_outside_the_scope():
    registry = Apps()  # of its own: these models exist only here

    class Loose(models.Model):  # noqa: DJ008
        tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")

        class Meta:
            app_label = "tenancy_check"
            apps = registry

    class Owned(TenantOwned):
        class Meta:
            app_label = "tenancy_check"
            apps = registry

    class Renamed(TenantOwned):
        tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="renamed")

        class Meta:
            app_label = "tenancy_check"
            apps = registry

    errors = tenant_owned_errors([Loose, Owned, Renamed])
    assert [(e.id, e.obj) for e in errors] == [("ledger_portal.E001", Loose)]
    assert hasattr(Owned.objects, "for_user")
    assert hasattr(Renamed.objects, "for_user")


def test_every_tenant_owned_model_has_the_scope():
    owned = [m for m in apps.get_models() if issubclass(m, TenantOwned)]
    assert len(owned) >= 25
    assert all(callable(getattr(m.objects, "for_user", None)) for m in owned), [
        m._meta.label for m in owned if not callable(getattr(m.objects, "for_user", None))]
