"""One answer to "which tenants may this principal act on with this role": every face of the
tenant scope (querysets, ``tenants_for``, ``has_role``, the admin's tenant list) derives from
``allowed_tenant_ids`` and agrees with it, for every kind of principal and every role."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User
from django.test import RequestFactory

from core.actors import ApiKeyPrincipal
from core.admin_base import TenantScopedAdmin
from core.models import ApiKey, CliActor, Tenant
from core.roles import Role
from core.services import grant_role, issue_api_key
from core.tenancy import allowed_tenant_ids, has_role, tenants_for
from runs.models import Agent

pytestmark = pytest.mark.django_db


@pytest.fixture
def principals(acme: Tenant, globex: Tenant) -> dict[str, Any]:
    initech = Tenant.objects.create(slug="initech", name="Initech")
    for tenant in (acme, globex, initech):
        Agent.objects.create(tenant=tenant, agent_id=f"bot-{tenant.slug}")
    direct = User.objects.create_user("direct", is_staff=True)
    grant_role(direct, Role.VIEW_LEDGER, acme)
    grant_role(direct, Role.OPERATE, globex)
    via_group = User.objects.create_user("grouped", is_staff=True)
    auditors = Group.objects.create(name="auditors")
    grant_role(auditors, Role.VIEW_LEDGER, globex)
    grant_role(auditors, Role.EXPORT, initech)
    via_group.groups.add(auditors)
    narrowed = CliActor.objects.get(pk=direct.pk)
    narrowed.token_scopes = frozenset({Role.OPERATE})
    key, _ = issue_api_key(acme, "agent", [Role.INGEST, Role.VIEW_LEDGER])
    return {
        "superuser": User.objects.create_superuser("root"),
        "inactive superuser": User.objects.create_superuser("gone", is_active=False),
        "direct grants": direct,
        "group grants": via_group,
        "token narrowed to operate": narrowed,
        "api key": ApiKeyPrincipal(ApiKey.objects.select_related("tenant").get(pk=key.pk)),
        "nobody": User.objects.create_user("nobody", is_staff=True),
        "anonymous": AnonymousUser(),
    }


def expected(name: str, role: str, slugs: dict[str, int]) -> set[int] | None:
    table: dict[str, dict[str, set[str]] | None] = {
        "superuser": None,
        "inactive superuser": {},
        "direct grants": {Role.VIEW_LEDGER: {"acme"}, Role.OPERATE: {"globex"}},
        "group grants": {Role.VIEW_LEDGER: {"globex"}, Role.EXPORT: {"initech"}},
        "token narrowed to operate": {Role.OPERATE: {"globex"}},
        "api key": {Role.INGEST: {"acme"}, Role.VIEW_LEDGER: {"acme"}},
        "nobody": {},
        "anonymous": {},
    }
    roles = table[name]
    return None if roles is None else {slugs[s] for s in roles.get(role, set())}


@pytest.mark.parametrize("role", list(Role))
def test_every_face_of_the_scope_agrees_with_the_one_answer(principals, role):
    slugs = dict(Tenant.objects.values_list("slug", "pk"))
    every = set(slugs.values())
    admin = type("RoleAdmin", (TenantScopedAdmin,), {"view_role": role})(
        Agent, None)
    for name, user in principals.items():
        allowed = allowed_tenant_ids(user, role)
        want = expected(name, role, slugs)
        assert (None if allowed is None else set(allowed)) == want, name
        seen = every if want is None else want
        assert set(tenants_for(user, role).values_list("pk", flat=True)) == seen, name
        assert set(Agent.objects.for_user(user, role).values_list("tenant_id", flat=True)) \
            == seen, name
        assert [has_role(user, role, pk) for pk in sorted(every)] == [
            pk in seen for pk in sorted(every)], name
        assert has_role(user, role) == bool(seen), name
        if isinstance(user, User) and user.is_authenticated:
            request = RequestFactory().get("/admin/")
            request.user = user
            listed = admin.tenant_ids(request)
            assert (every if listed is None else set(listed)) == seen, name


def test_a_request_reads_roles_once_and_a_grant_or_revocation_is_seen_at_once(
        acme, globex, django_assert_num_queries):
    from core.services import revoke_role
    from core.tenancy import REQUEST_ROLES

    person = User.objects.create_user("person", is_staff=True)
    grant_role(person, Role.VIEW_LEDGER, acme)
    setattr(person, REQUEST_ROLES, {})  # as RolesPerRequestMiddleware does for a request
    with django_assert_num_queries(1):
        for role in list(Role) * 3:
            allowed_tenant_ids(person, role)
    assert allowed_tenant_ids(person, Role.VIEW_LEDGER) == {acme.pk}
    grant_role(person, Role.VIEW_LEDGER, globex)
    assert allowed_tenant_ids(person, Role.VIEW_LEDGER) == {acme.pk, globex.pk}
    revoke_role(person, Role.VIEW_LEDGER, acme)
    assert allowed_tenant_ids(person, Role.VIEW_LEDGER) == {globex.pk}


@pytest.mark.parametrize("how", ["local mode", "token"])
def test_a_ledger_command_reads_its_users_roles_once(how, acme, monkeypatch):
    """A command is one request: however many checks it makes, its user's roles are read once,
    whether it acts in local mode or through a personal access token."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from core.access_tokens import issue_personal_token
    from ledger_portal import cli

    person = User.objects.create_user("person", is_staff=True)
    for role in (Role.VIEW_LEDGER, Role.OPERATE, Role.VIEW_CONFIDENTIAL):
        grant_role(person, role, acme)
    if how == "token":
        _, raw = issue_personal_token(person, "laptop", scopes=[Role.VIEW_LEDGER, Role.OPERATE])
        monkeypatch.setenv("LEDGER_TOKEN", raw)
        argv = []
    else:
        argv = ["--as", "person"]
    checks: list[bool] = []

    def command(args, user):
        checks.extend(has_role(user, role, acme) for role in list(Role) * 3)
        return 0

    monkeypatch.setattr(cli, "cmd_outage", command)
    with CaptureQueriesContext(connection) as queries:
        assert cli.main([*argv, "outage", "--tenant", "acme"]) == 0
    role_reads = [q["sql"] for q in queries if "objectpermission" in q["sql"]]
    assert len(role_reads) == 1, role_reads
    assert checks.count(True) == 3 * (2 if how == "token" else 3)
