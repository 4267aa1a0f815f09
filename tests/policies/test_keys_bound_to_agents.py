"""An API key can be bound to agent ids: it then records and asks for those agents only (a
lying agent cannot borrow another agent's name), and a governed exception scoped to an agent
applies only to calls asked through a key bound to that agent."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from core.models import ApiKey
from core.services import issue_api_key
from policies.exceptions import grant_exception, request_exception
from runs.governance_log import setting_up
from runs.models import Run
from tests.otlp import spans as s


def key_for(acme, agents: list[str], scopes: list[str] | None = None) -> APIClient:
    with setting_up():
        _, raw = issue_api_key(acme, "bound", scopes or ["ingest", "view_ledger"],
                               agent_ids=agents)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    client.raw_key = raw  # type: ignore[attr-defined]
    return client


def batch(run_id: str, agent_id: str) -> dict[str, Any]:
    return {"runs": [{"run_id": run_id, "agent_id": agent_id, "goal": "g",
                      "status": "running", "started_at": "2026-11-25T10:00:00Z"}]}


def ask(client: APIClient, agent_id: str, tool: str = "delete_record",
        action_class: str = "delete") -> Any:
    return client.post("/api/v1/decisions/", {"run_id": "r1", "call_id": "c1",
                                              "agent_id": agent_id, "tool": tool,
                                              "action_class": action_class}, format="json")


def test_a_bound_key_cannot_record_a_run_for_another_agent(acme):
    client = key_for(acme, ["refunds"])
    answer = client.post("/api/v1/batches/", batch("run-x", "payroll"), format="json")
    assert answer.status_code == 403
    assert "payroll" in answer.json()["detail"]
    assert not Run.objects.filter(tenant=acme, run_id="run-x").exists()
    assert client.post("/api/v1/batches/", batch("run-y", "refunds"),
                       format="json").status_code == 201


def test_a_bound_key_cannot_append_to_another_agents_run(acme, key_client):
    key_client(acme).post("/api/v1/batches/", batch("run-p", "payroll"), format="json")
    client = key_for(acme, ["refunds"])
    answer = client.post("/api/v1/batches/", batch("run-p", "refunds"), format="json")
    assert answer.status_code in (403, 409)
    assert Run.objects.get(tenant=acme, run_id="run-p").agent.agent_id == "payroll"


def test_a_bound_key_cannot_ask_for_another_agent(acme):
    client = key_for(acme, ["refunds", "refunds-eu"])
    answer = ask(client, "payroll")
    assert answer.status_code == 403
    assert ask(client, "refunds-eu").status_code == 201


def test_a_bound_key_cannot_send_spans_of_another_agent(acme):
    client = key_for(acme, ["someone-else"])
    _, spans = s.agent_trace()  # its agent is agent-weather-1
    answer = Client().post("/v1/traces", data=s.protobuf(*spans),
                           content_type="application/x-protobuf",
                           headers={"Authorization": f"Bearer {client.raw_key}"})  # type: ignore[attr-defined]
    assert answer.status_code == 403
    assert not Run.objects.filter(tenant=acme).exists()


def test_an_unbound_key_still_acts_for_any_agent(acme, key_client):
    client = key_client(acme)
    assert client.post("/api/v1/batches/", batch("run-z", "anyone"),
                       format="json").status_code == 201


def test_binding_is_shown_and_fixed_once_issued(acme, alice, client):
    with setting_up():
        key, _ = issue_api_key(acme, "bound", ["ingest"], agent_ids=["refunds"], by=alice)
    client.force_login(alice)
    url = reverse("admin:ledger_portal_apikey_change", args=[key.pk])
    page = client.get(url).content.decode()
    assert "refunds" in page
    client.post(url, {"name": "renamed", "agent_ids": "[]", "expires_at": ""})
    assert ApiKey.objects.get(pk=key.pk).agent_ids == ["refunds"]


def test_minting_a_bound_key_in_the_admin(acme, alice, client):
    client.force_login(alice)
    answer = client.post(reverse("admin:ledger_portal_apikey_add"), {
        "tenant": acme.pk, "name": "refund-agent", "scopes": ["ingest"],
        "agent_ids": "refunds refunds-eu", "expires_at": ""})
    assert answer.status_code == 200, answer.content
    assert ApiKey.objects.get(name="refund-agent").agent_ids == ["refunds", "refunds-eu"]


@pytest.mark.parametrize("agents", [["bad id"], ["ledger-portal"], [""]])
def test_a_binding_names_real_agent_ids(acme, agents):
    with pytest.raises(ValueError):
        issue_api_key(acme, "bound", ["ingest"], agent_ids=agents)


@pytest.fixture
def erasure_exception(acme, publish, alice, dave):
    version = publish([{"name": "no deletes", "action_classes": ["delete"], "effect": "deny"}])
    now = timezone.now()
    exc = request_exception(acme, by=alice, tool="delete_record", agent_id="cleaner",
                            action_class="delete", policy_version=version,
                            justification="GDPR erasure backlog, ticket PRIV-9",
                            starts_at=now, ends_at=now + timedelta(hours=1))
    return grant_exception(exc, by=dave)


def test_an_agent_scoped_exception_applies_through_a_key_bound_to_the_agent(
        acme, erasure_exception):
    answer = ask(key_for(acme, ["cleaner"]), "cleaner")
    assert answer.json()["effect"] == "allow"


def test_an_unbound_key_claiming_the_agent_gets_no_exception(acme, erasure_exception,
                                                            key_client):
    answer = ask(key_client(acme, ["ingest"]), "cleaner")
    assert answer.json()["effect"] == "deny"
    answer = ask(key_for(acme, ["janitor"]), "janitor")
    assert answer.json()["effect"] == "deny"
