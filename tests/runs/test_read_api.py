"""Read API: filters, the ordered timeline, cursor pagination, and the OpenAPI schema."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.api import presenters, serializers


@pytest.fixture
def reader(acme, key_client):
    return key_client(acme, ["view_ledger"])


@pytest.fixture
def runs(acme, record, make_run):
    made = [make_run() for _ in range(6)]
    record(acme, *made)
    return made


def test_runs_filter_by_agent_status_and_time(reader, runs):
    agent = runs[0]["agent_id"]
    listed = reader.get(reverse("api:run-list"), {"agent_id": agent}).json()["results"]
    assert {r["agent_id"] for r in listed} == {agent}
    assert len(listed) == sum(r["agent_id"] == agent for r in runs)

    by_id = reader.get(reverse("api:run-list"), {"run_id": runs[2]["run_id"]}).json()
    assert [r["run_id"] for r in by_id["results"]] == [runs[2]["run_id"]]

    after = reader.get(reverse("api:run-list"),
                       {"started_after": runs[3]["started_at"]}).json()["results"]
    assert {r["run_id"] for r in after} == {r["run_id"] for r in runs[3:]}

    bad = reader.get(reverse("api:run-list"), {"status": "exploded"})
    assert bad.status_code == 400


def test_a_run_comes_with_its_whole_timeline_in_chain_order(reader, runs):
    run = runs[0]
    body = reader.get(reverse("api:run-detail", args=[run["run_id"]])).json()
    assert body["goal"] == run["goal"]
    timeline = body["timeline"]
    assert [e["seq"] for e in timeline] == list(range(1, body["last_seq"] + 1))
    kinds = [e["kind"] for e in timeline]
    assert kinds.count("tool_call") == len(run["tool_calls"])
    assert kinds.count("step") == len(run["steps"])
    first_call = next(e for e in timeline if e["kind"] == "tool_call")
    assert first_call["tool"] == run["tool_calls"][0]["tool"]
    assert first_call["classifications"] == run["tool_calls"][0]["classifications"]


def test_tool_calls_filter_by_tool_class_and_status(reader, runs):
    calls = [c for r in runs for c in r["tool_calls"]]
    tool = calls[0]["tool"]
    got = reader.get(reverse("api:toolcall-list"), {"tool": tool, "page_size": 500}).json()
    assert len(got["results"]) == sum(c["tool"] == tool for c in calls)
    failed = reader.get(reverse("api:toolcall-list"),
                        {"status": "failed", "action_class": calls[0]["action_class"],
                         "page_size": 500}).json()["results"]
    assert all(c["status"] == "failed" for c in failed)
    assert len(failed) == sum(c["status"] == "failed" and c["action_class"] ==
                              calls[0]["action_class"] for c in calls)


def test_cursor_pagination_walks_every_row_once_without_counting(reader, runs):
    seen, url = [], reverse("api:toolcall-list") + "?page_size=7"
    while url:
        page = reader.get(url).json()
        assert "count" not in page
        seen += [c["call_id"] for c in page["results"]]
        url = page["next"]
    assert sorted(seen) == sorted(c["call_id"] for r in runs for c in r["tool_calls"])


def test_a_tool_call_by_its_call_id(reader, runs):
    call = runs[1]["tool_calls"][0]
    body = reader.get(reverse("api:toolcall-detail", args=[call["call_id"]])).json()
    assert body["input"] == call["input"]
    assert body["run_id"] == runs[1]["run_id"]


def test_an_id_in_two_of_your_tenants_asks_which(acme, globex, alice, record, make_run,
                                                  user_client):
    from core.services import grant_role

    grant_role(alice, "view_ledger", globex)
    run = make_run()
    record(acme, run)
    record(globex, run)
    client = user_client(alice)
    ambiguous = client.get(reverse("api:run-detail", args=[run["run_id"]]))
    assert ambiguous.status_code == 400
    assert "tenant" in ambiguous.json()
    narrowed = client.get(reverse("api:run-detail", args=[run["run_id"]]), {"tenant": "globex"})
    assert narrowed.json()["tenant"] == "globex"


@pytest.mark.parametrize(("fields", "serializer"), [
    (presenters.RUN_FIELDS, serializers.RunSerializer),
    (presenters.STEP_FIELDS, serializers.StepSerializer),
    (presenters.MODEL_CALL_FIELDS, serializers.ModelCallSerializer),
    (presenters.TOOL_CALL_FIELDS, serializers.ToolCallSerializer),
    (presenters.ANNOTATION_FIELDS, serializers.AnnotationSerializer),
    (presenters.AGENT_FIELDS, serializers.AgentSerializer),
    (presenters.TENANT_FIELDS, serializers.TenantSerializer),
])
def test_documented_shapes_match_what_is_returned(fields, serializer):
    # A record's commitment is computed from its hashes (runs/commitments.py), not a column.
    hashed = {"content_hash", "head_hash"} & set(fields)
    assert set(serializer().fields) == set(fields) | ({"commitment"} if hashed else set())


def test_the_openapi_schema_describes_the_api(alice, client):
    client.force_login(alice)
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/batches/" in schema["paths"]
    assert "/api/v1/runs/{run_id}/" in schema["paths"]
    batch = schema["paths"]["/api/v1/batches/"]["post"]
    assert {"201", "400", "409", "413"} <= set(batch["responses"])
    deferred = schema["paths"]["/api/v1/deferred/"]["get"]
    assert {"tenant", "status", "source", "reason_code", "run_id"} <= {
        p["name"] for p in deferred["parameters"]}
    assert {"/api/v1/deferred/{deferred_id}/", "/api/v1/deferred/{deferred_id}/apply/",
            "/api/v1/deferred/{deferred_id}/dismiss/"} <= set(schema["paths"])
    assert client.get("/api/docs/").status_code == 200


def test_the_schema_generates_without_warnings(db, tmp_path):
    from django.core.management import call_command

    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert "/api/v1/decisions/" in out.read_text()
