"""The policy trail on the pages (issue #13): each decision names the rule that decided, the
policy and its version, the reason as text a reader sees, and the mode; a replay's decisions
are on the replay's page, not on the run's timeline; a call refused before it was recorded
still shows on its run."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from operations.replay import start_replay
from policies.models import Decision
from tests.replay.scenario import RUN_ID, recorded_run, stored_run, walk, wire_tools
from tests.replay.toolservers import http_tool_server

pytestmark = pytest.mark.django_db

URL = "/api/v1/decisions/"
RULES = [
    {"name": "reads are fine", "action_classes": ["read"], "effect": "allow"},
    {"name": "no deletes", "action_classes": ["delete"], "effect": "deny"},
    {"name": "exfil needs a person", "action_classes": ["exfil"], "effect": "require_approval"},
]


def text_of(html: str) -> str:
    """What a reader sees: tags (and their attributes, such as title) removed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def row_of(page: str, anchor: str) -> str:
    found = re.search(rf'<tr[^>]* id="{re.escape(anchor)}".*?</tr>', page, re.S)
    assert found is not None, f"no row {anchor}"
    return found.group(0)


@pytest.fixture
def version(acme, publish, register_tools) -> Any:
    register_tools(acme, lookup_customer="read", delete_record="delete", refund_payment="write",
                   send_email="exfil")
    return publish(RULES)


@pytest.fixture
def agent(acme, key_client, version) -> Any:
    return key_client(acme, ["ingest"])


def decide(agent: Any, run_id: str, call_id: str, tool: str, action_class: str,
           mode: str = "live") -> Decision:
    response = agent.post(URL, {"run_id": run_id, "call_id": call_id, "agent_id": "billing-bot",
                                "tool": tool, "action_class": action_class, "arguments": {},
                                "mode": mode}, format="json")
    assert response.status_code == 201, response.content
    return Decision.objects.get(pk=response.json()["id"])


def a_run(run_id: str, *calls: tuple[str, str, str]) -> dict[str, Any]:
    return {"run_id": run_id, "agent_id": "billing-bot", "goal": "clean up",
            "status": "failed", "started_at": "2026-01-05T10:00:00+00:00",
            "tool_calls": [{"call_id": c, "tool": t, "action_class": a, "status": "denied",
                            "started_at": "2026-01-05T10:00:01+00:00"} for c, t, a in calls]}


def test_a_decision_names_its_rule_policy_version_reason_and_mode(acme, alice, agent, version,
                                                                  record, client):
    decision = decide(agent, "run-trail", "del-1", "delete_record", "delete", mode="sandbox")
    record(acme, a_run("run-trail", ("del-1", "delete_record", "delete")))
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", "run-trail"])).content.decode()
    seen = text_of(row_of(page, "tool_call-del-1"))
    assert "no deletes" in seen  # the rule that decided
    assert f"tools v{version.number}" in seen
    assert decision.reason
    assert decision.reason in seen.replace("&#x27;", "'")
    assert "sandbox" in seen


def test_a_call_refused_before_it_was_recorded_still_shows_on_its_run(acme, alice, agent,
                                                                      record, client):
    decide(agent, "run-refused", "del-never-ran", "delete_record", "delete")
    record(acme, a_run("run-refused", ("look-1", "lookup_customer", "read")))
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", "run-refused"])).content.decode()
    assert "del-never-ran" in page
    refused = re.search(r'id="unrecorded-decisions".*?</(ul|table|div)>', page, re.S)
    assert refused is not None, "no trail of decisions whose call was not recorded"
    seen = text_of(refused.group(0))
    assert "del-never-ran" in seen
    assert "deny" in seen
    assert "no deletes" in seen


def test_replay_decisions_are_on_the_replay_not_on_the_run(acme, alice, version, record,
                                                           client):
    record(acme, recorded_run())
    with http_tool_server() as server:
        wire_tools(acme, server)
        replay = walk(start_replay(stored_run(acme), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    assert Decision.objects.filter(replay=replay).count() == 3

    client.force_login(alice)
    run_page = client.get(reverse("run-timeline", args=["acme", RUN_ID])).content.decode()
    assert 'class="decision ' not in run_page
    assert "reads are fine" not in text_of(run_page)

    replay_page = client.get(reverse("replay-detail", args=["acme", replay.pk])
                             ).content.decode()
    lookup = text_of(row_of(replay_page, "step-1"))
    decided = Decision.objects.get(replay=replay, call_id=f"{RUN_ID}-c1")
    assert "reads are fine" in lookup
    assert f"tools v{version.number}" in lookup
    assert decided.reason in lookup.replace("&#x27;", "'")
    assert "sandbox" in lookup
