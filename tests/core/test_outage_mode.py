"""Outage mode (the runbook: "during outages, default to sandbox mode and require explicit HITL
approval to leave sandbox"): switched by those who manage the tenant's policies, through one
service behind ``ledger outage``, ``POST /api/v1/tenants/<slug>/outage/`` and the Tenant admin's
actions; every switch is an annotation in the tenant's governance log saying who and why.

alice manages acme's policies; bob reads acme's ledger only; charlie is in globex.
(What outage mode does to replays: tests/replay/test_outage_switch.py.)
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from core.cli_support import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from core.models import Tenant
from core.roles import Role
from core.services import grant_role, set_outage_mode
from ledger_portal.cli import main
from runs.annotations import GOVERNANCE_RUN_ID
from runs.integrity import verify_tenant
from runs.models import Annotation

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(bob, acme):
    grant_role(bob, Role.VIEW_LEDGER, acme)
    return bob


def outage_notes(tenant: Tenant) -> list[Annotation]:
    return list(Annotation.objects.filter(tenant=tenant, run__run_id=GOVERNANCE_RUN_ID,
                                          data__event="outage_mode").order_by("seq"))


def in_outage(tenant: Tenant) -> bool:
    return Tenant.objects.get(pk=tenant.pk).outage_mode


# -- the service --------------------------------------------------------------------------------

def test_switching_outage_mode_records_who_and_why_in_the_governance_log(acme, alice):
    on = set_outage_mode(acme, by=alice, on=True, reason="primary DB failover (INC-7)")
    assert on is not None
    assert in_outage(acme)
    assert acme.outage_mode
    assert (on.annotation_kind, on.author, on.author_label) == ("override", alice, "alice")
    assert on.data == {"event": "outage_mode", "outage_mode": True, "tenant": "acme",
                       "reason": "primary DB failover (INC-7)"}
    assert "sandbox only" in on.body
    assert "primary DB failover (INC-7)" in on.body
    off = set_outage_mode(acme, by=alice, on=False, reason="failover done")
    assert off is not None
    assert not in_outage(acme)
    assert [n.data["outage_mode"] for n in outage_notes(acme)] == [True, False]
    assert acme.history.latest().history_user == alice
    assert verify_tenant(acme).intact


def test_switching_to_the_current_mode_records_nothing(acme, alice):
    assert set_outage_mode(acme, by=alice, on=False, reason="just checking") is None
    set_outage_mode(acme, by=alice, on=True, reason="outage")
    assert set_outage_mode(acme, by=alice, on=True, reason="outage, again") is None
    assert len(outage_notes(acme)) == 1


def test_without_the_manage_policies_role_outage_mode_is_refused(acme, reader, charlie):
    for user in (reader, charlie):
        with pytest.raises(PermissionDenied, match="manage_policies"):
            set_outage_mode(acme, by=user, on=True, reason="I think it is down")
    assert not in_outage(acme)
    assert outage_notes(acme) == []


@pytest.mark.parametrize("reason", ["", "   ", "x" * 2001, "nul\x00"])
def test_a_reason_is_required(acme, alice, reason):
    with pytest.raises(ValidationError):
        set_outage_mode(acme, by=alice, on=True, reason=reason)
    assert not in_outage(acme)
    assert outage_notes(acme) == []


# -- ledger outage ------------------------------------------------------------------------------

def test_ledger_outage_switches_and_shows_the_mode(acme, alice, capsys):
    assert main(["--as", "alice", "outage", "--tenant", "acme", "on", "--reason",
                 "DB failover"]) == EXIT_OK
    assert "outage mode on" in capsys.readouterr().out
    assert in_outage(acme)
    [note] = outage_notes(acme)
    assert (note.author, note.data["reason"]) == (alice, "DB failover")
    assert main(["--as", "alice", "outage", "--tenant", "acme"]) == EXIT_OK
    assert "acme: outage mode on" in capsys.readouterr().out
    assert main(["--as", "alice", "outage", "--tenant", "acme", "off", "--reason",
                 "recovered"]) == EXIT_OK
    assert not in_outage(acme)


def test_ledger_outage_without_the_role_exits_3(acme, reader, capsys):
    code = main(["--as", "bob", "outage", "--tenant", "acme", "on", "--reason", "down"])
    assert code == EXIT_FORBIDDEN
    assert "manage_policies" in capsys.readouterr().err
    assert not in_outage(acme)


def test_ledger_outage_needs_a_reason_and_a_tenant_of_yours(acme, alice, charlie, capsys):
    assert main(["--as", "alice", "outage", "--tenant", "acme", "on"]) == EXIT_USAGE
    assert main(["--as", "alice", "outage", "--tenant", "acme", "on", "--reason",
                 " "]) == EXIT_USAGE
    assert main(["--as", "charlie", "outage", "--tenant", "acme", "on", "--reason",
                 "down"]) == EXIT_NOT_FOUND
    assert not in_outage(acme)
    assert outage_notes(acme) == []


# -- the API ------------------------------------------------------------------------------------

def url(slug: str = "acme") -> str:
    return reverse("api:tenant-outage", args=[slug])


def test_the_api_switches_outage_mode_and_shows_it(acme, alice, user_client):
    client = user_client(alice)
    assert client.get(url()).json() == {"tenant": "acme", "outage_mode": False}
    response = client.post(url(), {"outage_mode": True, "reason": "DB failover"},
                           format="json")
    assert response.status_code == 200, response.content
    [note] = outage_notes(acme)
    assert response.json() == {"tenant": "acme", "outage_mode": True, "changed": True,
                               "annotation_id": note.annotation_id}
    assert client.get(url()).json()["outage_mode"] is True
    again = client.post(url(), {"outage_mode": True, "reason": "still down"}, format="json")
    assert again.json()["changed"] is False


def test_an_api_key_with_manage_policies_switches_it(acme, key_client):
    client = key_client(acme, ["manage_policies", "view_ledger"])
    response = client.post(url(), {"outage_mode": True, "reason": "paged"}, format="json")
    assert response.status_code == 200, response.content
    assert outage_notes(acme)[0].author_label == "apikey:acme/agent"


def test_the_api_refuses_readers_with_403(acme, reader, user_client, key_client):
    for client in (user_client(reader), key_client(acme, ["view_ledger", "operate"])):
        response = client.post(url(), {"outage_mode": True, "reason": "down"}, format="json")
        assert response.status_code == 403
        assert "manage_policies" in response.json()["detail"]
    assert not in_outage(acme)


@pytest.mark.parametrize("payload", [{}, {"outage_mode": True}, {"outage_mode": True,
                                                                  "reason": ""},
                                     {"outage_mode": "maybe", "reason": "x"}])
def test_the_api_refuses_bad_input_with_400(acme, alice, user_client, payload):
    response = user_client(alice).post(url(), payload, format="json")
    assert response.status_code == 400
    assert not in_outage(acme)


def test_another_tenant_is_404(acme, charlie, globex, user_client, key_client):
    for client in (user_client(charlie), key_client(globex, ["manage_policies",
                                                             "view_ledger"])):
        assert client.get(url()).status_code == 404
        response = client.post(url(), {"outage_mode": True, "reason": "x"}, format="json")
        assert response.status_code == 404
    assert not in_outage(acme)


# -- the admin ----------------------------------------------------------------------------------

def changelist() -> str:
    return reverse("admin:ledger_portal_tenant_changelist")


def test_a_policy_manager_switches_outage_mode_from_the_tenant_admin(acme, alice, client):
    assert not alice.is_superuser
    client.force_login(alice)
    response = client.post(changelist(), {"action": "enter_outage_mode",
                                          "_selected_action": [acme.pk],
                                          "reason": "DB failover"}, follow=True)
    assert response.status_code == 200
    assert in_outage(acme)
    [note] = outage_notes(acme)
    assert (note.author, note.data["reason"]) == (alice, "DB failover")
    client.post(changelist(), {"action": "leave_outage_mode", "_selected_action": [acme.pk],
                               "reason": "recovered"})
    assert not in_outage(acme)


def test_the_admin_action_needs_a_reason(acme, alice, client):
    client.force_login(alice)
    response = client.post(changelist(), {"action": "enter_outage_mode",
                                          "_selected_action": [acme.pk], "reason": ""},
                           follow=True)
    assert "not switched on" in response.content.decode()
    assert not in_outage(acme)


def test_readers_are_not_offered_the_outage_actions(acme, reader, client):
    client.force_login(reader)
    page = client.get(changelist()).content.decode()
    assert "enter_outage_mode" not in page
    client.post(changelist(), {"action": "enter_outage_mode", "_selected_action": [acme.pk],
                               "reason": "down"})
    assert not in_outage(acme)


def test_the_tenant_form_shows_outage_mode_read_only_even_to_superusers(acme, client):
    root = User.objects.create_superuser("root", password="pw-for-tests-only")
    client.force_login(root)
    change = reverse("admin:ledger_portal_tenant_change", args=[acme.pk])
    saved = client.post(change, {"slug": "acme", "name": "Acme Corp", "outage_mode": "on",
                                 "approval_escalate_minutes": 30,
                                 "approval_timeout_minutes": 240,
                                 "unregistered_tools": "require_approval",
                                 "batch_unknown_fields": "strict"})
    assert saved.status_code == 302  # saved, outage_mode ignored
    assert Tenant.objects.get(pk=acme.pk).name == "Acme Corp"
    assert not in_outage(acme)
    assert outage_notes(acme) == []
