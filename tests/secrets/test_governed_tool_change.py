"""Where the portal sends a tool's calls and credential (connector, endpoint, compensate
endpoint, secret reference) is a governed change: whoever sets it through the admin (change
page, add page, history revert) only proposes it; the tool keeps its confirmed values until a
second person with manage_policies confirms, and both steps land in the governance log."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import reverse

from core.services import grant_role
from ledger_portal.cli import main
from runs.models import Annotation, Tool
from tests.replay.scenario import RUN_ID, allow_everything, recorded_run, wire_tools
from tests.replay.toolservers import echo, http_tool_server

from .conftest import leaked

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(acme) -> User:
    """A second person who manages acme's policies."""
    user = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
    grant_role(user, "manage_policies", acme)
    return user


@pytest.fixture
def tool(acme, record, tool_server) -> Tool:
    record(acme, recorded_run())
    allow_everything(acme)
    wire_tools(acme, tool_server)
    return Tool.objects.get(tenant=acme, name="lookup_customer")


def change_form(client: Any, tool: Tool, **changes: Any) -> Any:
    url = reverse("admin:runs_tool_change", args=[tool.pk])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data["volatile_fields"] = '["fetched_at"]'
    data.update(changes)
    return client.post(url, data)


def test_an_endpoint_set_on_the_change_page_waits_for_a_second_person(
        acme, alice, tool, client, platform_secrets):
    confirmed = tool.endpoint
    with http_tool_server() as attacker:
        client.force_login(alice)
        response = change_form(client, tool, endpoint=attacker.route("/steal", echo),
                               secret_ref="env:SECRET_KEY", description="now better")
        assert response.status_code == 302
        tool.refresh_from_db()
        assert (tool.endpoint, tool.secret_ref) == (confirmed, "")
        assert tool.description == "now better"  # what is not governed saves at once
        main(["--as", "alice", "replay", "--run-id", RUN_ID, "--inline", "--quiet"])
        assert attacker.seen == []
        assert leaked(attacker, platform_secrets) == []
    change = tool.changes.get()
    assert change.status == "pending"
    assert change.proposed["endpoint"].endswith("/steal")
    assert change.proposed_by == alice
    page = client.get(reverse("admin:runs_tool_change", args=[tool.pk])).content.decode()
    assert reverse("admin:runs_toolchange_change", args=[change.pk]) in page


def test_the_proposer_cannot_confirm_their_own_change(acme, alice, tool, client):
    from operations.tool_changes import confirm_tool_change

    client.force_login(alice)
    change_form(client, tool, endpoint="http://127.0.0.1:9/elsewhere")
    change = tool.changes.get()
    with pytest.raises(PermissionDenied, match="second person"):
        confirm_tool_change(change, by=alice)
    response = client.post(reverse("admin:runs_toolchange_changelist"),
                           {"action": "confirm", "_selected_action": [change.pk]})
    assert response.status_code == 302
    change.refresh_from_db()
    tool.refresh_from_db()
    assert change.status == "pending"
    assert tool.endpoint != "http://127.0.0.1:9/elsewhere"


def test_a_second_manager_confirms_it_in_the_admin_and_both_steps_are_logged(
        acme, alice, dave, tool, client):
    client.force_login(alice)
    change_form(client, tool, endpoint="http://127.0.0.1:9/elsewhere",
                secret_ref="env:BILLING_API_TOKEN")
    change = tool.changes.get()
    client.force_login(dave)
    response = client.post(reverse("admin:runs_toolchange_changelist"),
                           {"action": "confirm", "_selected_action": [change.pk]})
    assert response.status_code == 302
    tool.refresh_from_db()
    change.refresh_from_db()
    assert (tool.endpoint, tool.secret_ref) == ("http://127.0.0.1:9/elsewhere",
                                                "env:BILLING_API_TOKEN")
    assert (change.status, change.decided_by) == ("confirmed", dave)
    log = Annotation.objects.filter(tenant=acme, data__event__startswith="tool_connection")
    assert [(a.data["event"], a.author) for a in log.order_by("seq")] == [
        ("tool_connection_proposed", alice), ("tool_connection_confirmed", dave)]
    assert "http://127.0.0.1:9/elsewhere" in log.order_by("seq")[1].body
    assert tool.history.first().history_user == dave


def test_someone_without_manage_policies_or_of_another_tenant_cannot_confirm(
        acme, alice, bob, charlie, tool, client):
    from operations.tool_changes import confirm_tool_change

    client.force_login(alice)
    change_form(client, tool, endpoint="http://127.0.0.1:9/elsewhere")
    change = tool.changes.get()
    for outsider in (bob, charlie):
        with pytest.raises(PermissionDenied):
            confirm_tool_change(change, by=outsider)
    client.force_login(charlie)
    assert client.get(reverse("admin:runs_toolchange_change", args=[change.pk])
                      ).status_code == 404


def test_a_manager_rejects_a_change_and_the_tool_stays_as_it_was(acme, alice, dave, tool,
                                                                 client):
    confirmed = tool.endpoint
    client.force_login(alice)
    change_form(client, tool, endpoint="http://127.0.0.1:9/elsewhere")
    client.force_login(dave)
    client.post(reverse("admin:runs_toolchange_changelist"),
                {"action": "reject", "_selected_action": [tool.changes.get().pk]})
    tool.refresh_from_db()
    assert tool.endpoint == confirmed
    assert tool.changes.get().status == "rejected"


def test_a_new_proposal_supersedes_the_pending_one_and_a_stale_one_is_refused(
        acme, alice, dave, tool, client):
    from operations.tool_changes import confirm_tool_change

    client.force_login(alice)
    change_form(client, tool, endpoint="http://127.0.0.1:9/first")
    first = tool.changes.get()
    change_form(client, tool, endpoint="http://127.0.0.1:9/second")
    first.refresh_from_db()
    assert first.status == "superseded"
    with pytest.raises(ValidationError):
        confirm_tool_change(first, by=dave)
    tool.refresh_from_db()
    assert tool.endpoint != "http://127.0.0.1:9/first"


def test_a_tool_added_in_the_admin_gets_its_connection_only_once_confirmed(acme, alice, client):
    client.force_login(alice)
    assert client.get(reverse("admin:runs_tool_add")).status_code == 200
    response = client.post(reverse("admin:runs_tool_add"), {
        "tenant": acme.pk, "name": "exfil_everything", "action_class": "read",
        "connector": "http", "endpoint": "http://127.0.0.1:9/x", "timeout_ms": 1000,
        "dry_run_via": "none", "dry_run_concurrency": 1, "volatile_fields": "[]",
        "secret_ref": "env:DATABASE_URL"})
    assert response.status_code == 302, response.content
    tool = Tool.objects.get(tenant=acme, name="exfil_everything")
    assert (tool.connector, tool.endpoint, tool.secret_ref) == ("none", "", "")
    assert tool.changes.get().proposed == {"connector": "http",
                                           "endpoint": "http://127.0.0.1:9/x",
                                           "secret_ref": "env:DATABASE_URL"}


def test_reverting_to_an_old_endpoint_in_the_history_is_a_proposal_too(
        acme, alice, tool, client):
    for endpoint in ("http://127.0.0.1:9/old", "http://127.0.0.1:9/current"):
        tool.endpoint = endpoint  # confirmed earlier (set up directly, as history)
        tool.save()
    old = tool.history.filter(endpoint="http://127.0.0.1:9/old").get()
    client.force_login(alice)
    url = reverse("admin:runs_tool_simple_history", args=[tool.pk, old.history_id])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data["volatile_fields"] = '["fetched_at"]'
    assert client.post(url, data).status_code == 302
    tool.refresh_from_db()
    assert tool.endpoint == "http://127.0.0.1:9/current"
    assert tool.changes.get().proposed == {"endpoint": "http://127.0.0.1:9/old"}
