"""Roles granted to groups work like roles granted to users; governance objects keep history."""

from __future__ import annotations

from django.contrib.auth.models import Group, User
from django.urls import reverse

from core.services import grant_role, revoke_role
from core.tenancy import has_role
from runs.annotations import GOVERNANCE_RUN_ID
from runs.models import Agent, Run


def test_a_role_granted_to_a_group_reaches_its_members(acme, record, make_run, client):
    record(acme, make_run())
    dana = User.objects.create_user("dana", password="pw-for-tests-only", is_staff=True)
    auditors = Group.objects.create(name="acme-auditors")
    dana.groups.add(auditors)
    assert not has_role(dana, "view_ledger", acme)
    grant_role(auditors, "view_ledger", acme)
    assert has_role(dana, "view_ledger", acme)
    agent_runs = Run.objects.exclude(run_id=GOVERNANCE_RUN_ID)
    assert agent_runs.for_user(dana, "view_ledger").count() == 1
    revoke_role(auditors, "view_ledger", acme)
    assert agent_runs.for_user(dana, "view_ledger").count() == 0


def test_roles_are_granted_in_the_admin_through_object_permissions(acme, db, client):
    admin = User.objects.create_superuser("root", password="pw-for-tests-only")
    erin = User.objects.create_user("erin", password="pw-for-tests-only", is_staff=True)
    client.force_login(admin)
    url = reverse("admin:ledger_portal_tenant_permissions_manage_user",
                  args=[acme.pk, erin.pk])
    response = client.post(url, {"permissions": ["view_ledger", "approve"]})
    assert response.status_code == 302
    assert has_role(erin, "approve", acme)
    assert has_role(erin, "view_ledger", acme)
    assert not has_role(erin, "export", acme)


def test_editing_an_agent_in_the_admin_keeps_its_history(alice, acme, record, make_run, client):
    run = make_run()
    record(acme, run)
    agent = Agent.objects.get(agent_id=run["agent_id"])
    client.force_login(alice)
    response = client.post(reverse("admin:runs_agent_change", args=[agent.pk]), {
        "agent_id": agent.agent_id, "name": "Support triage v2", "description": "renamed"})
    assert response.status_code == 302, response.content
    names = list(agent.history.order_by("history_date").values_list("name", flat=True))
    assert names[-1] == "Support triage v2"
    assert len(names) == 2
    history = client.get(reverse("admin:runs_agent_history", args=[agent.pk]))
    assert history.status_code == 200
    assert "Support triage v2" in history.content.decode()
