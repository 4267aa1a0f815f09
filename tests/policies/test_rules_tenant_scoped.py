"""Policy rules carry the one tenant scope like every tenant-owned row (they had none before
``TenantOwned``): a person who manages another tenant's policies does not see them."""

from __future__ import annotations

import pytest

from core.roles import Role
from policies.models import Rule


@pytest.mark.django_db
def test_policy_rules_are_scoped_to_their_tenant(publish, charlie, alice):
    version = publish([{"name": "no refunds", "effect": "deny", "tool": "refund"}])
    assert Rule.objects.filter(version=version).count() == 1
    assert Rule.objects.for_user(alice, Role.MANAGE_POLICIES).filter(version=version).count() == 1
    assert not Rule.objects.for_user(charlie, Role.MANAGE_POLICIES).filter(
        version=version).exists()  # charlie manages globex's policies, not acme's
