"""Batch ingestion of what a newer agent sends: strict refuses it (the default), lenient records
the known part and keeps the rest as deferred items, in the same transaction."""

from __future__ import annotations

import copy

import orjson
import pytest

from runs.models import Annotation, DeferredItem, ModelCall, Run, Step, ToolCall

URL = "/api/v1/batches/"


def post(client, runs, **top):
    return client.post(URL, data=orjson.dumps({"runs": runs, **top}),
                       content_type="application/json")


def counts():
    return (Run.objects.count(), Step.objects.count(), ModelCall.objects.count(),
            ToolCall.objects.count(), Annotation.objects.count(), DeferredItem.objects.count())


@pytest.fixture
def client(acme, key_client):
    return key_client(acme)


@pytest.fixture
def lenient(acme):
    acme.batch_unknown_fields = "lenient"
    acme.save()
    return acme


def newer_agents_run(make_run):
    """A run as a newer agent sends it: a field this portal does not know on one tool call, an
    action class it does not know on another, a token count it does not know in a usage."""
    run = make_run()
    run["tool_calls"][0]["reasoning_trace"] = {"why": "the customer asked"}
    run["tool_calls"][1]["action_class"] = "impersonate"
    run["model_calls"][0]["usage"]["cached_tokens"] = 12
    return run


def test_strict_is_the_default_and_refuses_the_whole_batch(client, make_run):
    before = counts()
    response = post(client, [newer_agents_run(make_run)])
    assert response.status_code == 400
    paths = {e["path"] for e in response.json()["errors"]}
    assert paths == {"runs[0].tool_calls[0].reasoning_trace",
                     "runs[0].tool_calls[1].action_class",
                     "runs[0].model_calls[0].usage.cached_tokens"}
    assert counts() == before


def test_lenient_records_the_known_part_and_defers_the_rest(client, lenient, make_run):
    run = newer_agents_run(make_run)
    response = post(client, [run])
    assert response.status_code == 201, response.content
    answer = response.json()
    assert answer["created"]["tool_calls"] == len(run["tool_calls"]) - 1
    assert {d["path"] for d in answer["deferred"]} == {
        "runs[0].tool_calls[0]", "runs[0].tool_calls[1]", "runs[0].model_calls[0]"}

    recorded = ToolCall.objects.get(call_id=run["tool_calls"][0]["call_id"])
    assert recorded.input == run["tool_calls"][0]["input"]  # known part, without the field
    assert not ToolCall.objects.filter(call_id=run["tool_calls"][1]["call_id"]).exists()
    assert ModelCall.objects.filter(call_id=run["model_calls"][0]["call_id"]).exists()

    items = {i.payload["path"]: i for i in DeferredItem.objects.filter(tenant=lenient)}
    field = items["runs[0].tool_calls[0]"]
    assert (field.source, field.reason_code, field.status) == ("batch", "unknown_field",
                                                               "pending")
    assert field.payload["unknown"] == {"reasoning_trace": {"why": "the customer asked"}}
    assert field.payload["record"] == run["tool_calls"][0]  # as received
    assert field.run_id == run["run_id"]
    whole = items["runs[0].tool_calls[1]"]
    assert whole.reason_code == "unknown_value"
    assert whole.payload["record"]["action_class"] == "impersonate"
    assert "action_class" in whole.reason
    assert items["runs[0].model_calls[0]"].payload["unknown"] == {"usage.cached_tokens": 12}


def test_a_retried_lenient_batch_defers_nothing_twice(client, lenient, make_run):
    run = newer_agents_run(make_run)
    assert post(client, [run]).status_code == 201
    before = counts()
    again = post(client, [copy.deepcopy(run)])
    assert again.status_code in (200, 201), again.content
    assert counts() == before


def test_lenient_still_refuses_what_is_wrong_not_new_and_writes_nothing(client, lenient,
                                                                        make_run):
    run = newer_agents_run(make_run)
    run["tool_calls"][2]["started_at"] = "yesterday"
    before = counts()
    response = post(client, [run])
    assert response.status_code == 400
    assert "runs[0].tool_calls[2].started_at" in {e["path"] for e in response.json()["errors"]}
    assert counts() == before


def test_a_lenient_batch_that_conflicts_leaves_no_deferred_item(client, lenient, make_run):
    run = make_run()
    assert post(client, [run]).status_code == 201
    changed = newer_agents_run(lambda: copy.deepcopy(run))
    changed["goal"] = "a different goal under the same run_id"
    before = counts()
    response = post(client, [changed])
    assert response.status_code == 409
    assert counts() == before


def test_an_unknown_run_status_records_the_run_running_and_defers_its_end(client, lenient,
                                                                          make_run):
    run = make_run()
    run["status"], run["ended_at"] = "paused_for_review", run["started_at"]
    response = post(client, [run])
    assert response.status_code == 201, response.content
    stored = Run.objects.get(run_id=run["run_id"])
    assert stored.status == "running"
    item = DeferredItem.objects.get(run_id=run["run_id"])
    assert item.payload["kind"] == "run_end"
    assert item.payload["record"] == {"status": "paused_for_review",
                                      "ended_at": run["started_at"]}


def test_an_unknown_top_level_field_is_deferred_without_a_run(client, lenient, make_run):
    response = post(client, [make_run()], schema_version=3)
    assert response.status_code == 201, response.content
    item = DeferredItem.objects.get()
    assert (item.run_id, item.payload["kind"]) == ("", "batch")
    assert item.payload["unknown"] == {"schema_version": 3}


def test_the_timeline_and_ledger_show_say_what_is_missing_with_the_count(
        client, lenient, make_run, alice, capsys):
    from django.test import Client

    from ledger_portal.cli import main

    run = newer_agents_run(make_run)
    assert post(client, [run]).status_code == 201
    browser = Client()
    browser.force_login(alice)

    page = browser.get(f"/runs/acme/{run['run_id']}/").content.decode()

    assert "Deferred pending ledger schema reconciliation" in page
    assert 'id="deferred-count">3 items<' in page
    assert "the value of action_class is not one this portal knows" in page
    assert main(["--as", "alice", "show", run["run_id"]]) == 0
    assert "Deferred pending ledger schema reconciliation: 3 items" in capsys.readouterr().out


def test_what_refers_to_a_record_held_back_is_refused_by_its_path_as_sent(client, lenient,
                                                                           make_run):
    run = make_run()
    first = run["tool_calls"][0]
    held = {**first, "call_id": "held-back", "action_class": "impersonate", "retry_of": None,
            "attempt": 1}
    retry = {**first, "call_id": "its-retry", "retry_of": "held-back", "attempt": 2}
    run["tool_calls"] = [first, held, retry]
    before = counts()

    response = post(client, [run])

    assert response.status_code == 400
    assert response.json()["errors"] == [{
        "path": "runs[0].tool_calls[2].retry_of",
        "message": f"no earlier tool call 'held-back' in run {run['run_id']!r}"}]
    assert counts() == before
