"""Batch ingestion: atomic, idempotent, precise about what is wrong, bounded in size."""

from __future__ import annotations

import copy

import orjson
import pytest
from django.test import override_settings

from runs.models import Annotation, ModelCall, Run, Step, ToolCall

URL = "/api/v1/batches/"


def post(client, runs, **extra):
    return client.post(URL, data=orjson.dumps({"runs": runs}), content_type="application/json",
                       **extra)


def counts():
    return (Run.objects.count(), Step.objects.count(), ModelCall.objects.count(),
            ToolCall.objects.count(), Annotation.objects.count())


@pytest.fixture
def client(acme, key_client):
    return key_client(acme)


def test_a_batch_lands_whole_and_reports_what_it_created(client, make_run):
    runs = [make_run(), make_run()]
    response = post(client, runs)
    assert response.status_code == 201, response.content
    created = response.json()["created"]
    assert created["runs"] == 2
    assert created["tool_calls"] == sum(len(r["tool_calls"]) for r in runs)
    assert created["steps"] == sum(len(r["steps"]) for r in runs)
    assert ToolCall.objects.count() == created["tool_calls"]


def test_the_tenant_comes_from_the_key_never_the_body(client, acme, globex, make_run):
    run = make_run()
    run["tenant"] = "globex"
    response = post(client, [run])
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "runs[0].tenant"
    good = make_run()
    assert post(client, [good]).status_code == 201
    assert Run.objects.get(run_id=good["run_id"]).tenant == acme


def test_one_bad_record_rejects_the_whole_batch_and_names_its_path(client, make_run):
    runs = [make_run(), make_run()]
    runs[1]["tool_calls"][0]["action_class"] = "teleport"
    runs[1]["tool_calls"][0]["status"] = None
    before = counts()
    response = post(client, runs)
    assert response.status_code == 400
    paths = {e["path"] for e in response.json()["errors"]}
    assert paths == {"runs[1].tool_calls[0].action_class", "runs[1].tool_calls[0].status"}
    assert counts() == before


def test_a_reference_to_an_unknown_step_is_a_400_and_nothing_lands(client, make_run):
    run = make_run()
    run["tool_calls"][-1]["step_id"] = "no-such-step"
    before = counts()
    response = post(client, [make_run(), run])
    assert response.status_code == 400
    assert response.json()["errors"] == [{
        "path": f"runs[1].tool_calls[{len(run['tool_calls']) - 1}].step_id",
        "message": "no step 'no-such-step' in this run"}]
    assert counts() == before


def test_duplicates_within_a_batch_are_named(client, make_run):
    run = make_run()
    run["tool_calls"].append(copy.deepcopy(run["tool_calls"][0]))
    response = post(client, [run])
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == (
        f"runs[0].tool_calls[{len(run['tool_calls']) - 1}].call_id")


def test_resending_a_batch_is_a_no_op(client, make_run):
    runs = [make_run(), make_run()]
    assert post(client, runs).status_code == 201
    before = counts()
    heads = list(Run.objects.order_by("id").values_list("head_hash", flat=True))
    again = post(client, runs)
    assert again.status_code == 200
    assert sum(again.json()["created"].values()) == 0
    assert again.json()["unchanged"]["tool_calls"] == sum(len(r["tool_calls"]) for r in runs)
    assert counts() == before
    assert list(Run.objects.order_by("id").values_list("head_hash", flat=True)) == heads


def test_timestamps_in_another_notation_are_the_same_record(client, make_run):
    run = make_run()
    assert post(client, [run]).status_code == 201
    for call in run["tool_calls"]:
        call["started_at"] = call["started_at"].replace("Z", "+00:00")
    assert post(client, [run]).status_code == 200


def test_different_content_under_a_recorded_id_is_a_409_naming_it(client, make_run):
    run = make_run()
    assert post(client, [run]).status_code == 201
    changed = copy.deepcopy(run)
    changed["tool_calls"][0]["output"] = {"tampered": True}
    changed["tool_calls"].append({**changed["tool_calls"][0], "call_id": "brand-new",
                                  "retry_of": None, "attempt": 1})
    before = counts()
    response = post(client, [changed])
    assert response.status_code == 409
    problem = response.json()["errors"][0]
    assert problem["path"] == "runs[0].tool_calls[0]"
    assert run["tool_calls"][0]["call_id"] in problem["message"]
    assert "output" in problem["message"]
    assert counts() == before  # the new call in the same batch did not land either


def test_a_later_batch_appends_to_a_running_run_and_extends_its_chain(client, make_run):
    run = make_run()
    first = {**run, "status": "running", "ended_at": None,
             "tool_calls": run["tool_calls"][:1]}
    assert post(client, [first]).status_code == 201
    stored = Run.objects.get(run_id=run["run_id"])
    assert stored.status == "running"
    head, last_seq = stored.head_hash, stored.last_seq

    response = post(client, [run])
    assert response.status_code == 201, response.content
    assert response.json()["created"]["tool_calls"] == len(run["tool_calls"]) - 1
    assert response.json()["unchanged"]["tool_calls"] == 1
    stored.refresh_from_db()
    assert stored.status == run["status"]
    assert stored.last_seq > last_seq
    assert stored.head_hash != head
    seqs = sorted([*ToolCall.objects.filter(run=stored).values_list("seq", flat=True),
                   *Step.objects.filter(run=stored).values_list("seq", flat=True),
                   *ModelCall.objects.filter(run=stored).values_list("seq", flat=True),
                   *Annotation.objects.filter(run=stored).values_list("seq", flat=True)])
    assert seqs == list(range(1, stored.last_seq + 1))
    # the end of the run is itself a chained record
    assert Annotation.objects.get(run=stored, annotation_kind="run_status").data["status"] == (
        run["status"])


def test_a_closed_run_takes_no_new_records(client, make_run):
    run = make_run()
    run["status"], run["ended_at"] = "succeeded", run["started_at"]
    assert post(client, [run]).status_code == 201
    late = {**run, "tool_calls": [{**run["tool_calls"][0], "call_id": "late-call",
                                   "retry_of": None, "attempt": 1}]}
    response = post(client, [late])
    assert response.status_code == 409
    assert "succeeded and takes no new records" in response.json()["errors"][0]["message"]


def test_a_run_cannot_end_twice_differently(client, make_run):
    run = make_run()
    run["status"], run["ended_at"] = "succeeded", run["started_at"]
    assert post(client, [run]).status_code == 201
    response = post(client, [{**run, "status": "failed"}])
    assert response.status_code == 409
    assert response.json()["errors"][0]["path"] == "runs[0].status"


def test_retries_are_linked_to_the_call_they_retry(client, make_run):
    run = make_run()
    original = run["tool_calls"][0]
    retry = {**original, "call_id": original["call_id"] + "-again", "attempt": 2,
             "retry_of": original["call_id"]}
    run["tool_calls"].insert(1, retry)
    assert post(client, [run]).status_code == 201
    stored = ToolCall.objects.get(call_id=retry["call_id"])
    assert stored.retry_of is not None
    assert stored.retry_of.call_id == original["call_id"]

    dangling = make_run()
    dangling["tool_calls"][0] = {**dangling["tool_calls"][0], "attempt": 2,
                                 "retry_of": "nowhere"}
    response = post(client, [dangling])
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "runs[0].tool_calls[0].retry_of"


def test_a_call_id_of_another_run_is_a_conflict(client, make_run):
    first, second = make_run(), make_run()
    assert post(client, [first]).status_code == 201
    second["tool_calls"][0]["call_id"] = first["tool_calls"][0]["call_id"]
    response = post(client, [second])
    assert response.status_code == 409
    assert "belongs to run" in response.json()["errors"][0]["message"]


def test_the_same_ids_in_another_tenant_are_other_records(acme, globex, key_client, make_run):
    run = make_run()
    assert post(key_client(acme), [run]).status_code == 201
    assert post(key_client(globex), [run]).status_code == 201
    assert Run.objects.filter(run_id=run["run_id"]).count() == 2


@override_settings(LEDGER_BATCH_MAX_RECORDS=10)
def test_too_many_records_is_a_413_with_the_limits(client, make_run):
    runs = [make_run() for _ in range(3)]
    response = post(client, runs)
    assert response.status_code == 413
    assert response.json()["limits"]["max_records"] == 10
    assert Run.objects.count() == 0


@override_settings(LEDGER_BATCH_MAX_BYTES=2048)
def test_too_many_bytes_is_a_413_with_the_limits(client, make_run):
    response = post(client, [make_run() for _ in range(5)])
    assert response.status_code == 413
    assert response.json()["limits"] == {"max_bytes": 2048, "max_records": 1000}


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.post(URL, data=b"{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "(body)"


def test_a_key_without_the_ingest_scope_is_refused(acme, key_client, make_run):
    response = post(key_client(acme, ["view_ledger"]), [make_run()])
    assert response.status_code == 403
    assert Run.objects.count() == 0


def test_a_person_records_into_a_named_tenant_they_may_ingest_into(alice, charlie, acme,
                                                                    user_client, make_run):
    assert post(user_client(alice), [make_run()]).status_code == 404  # no tenant named
    response = post(user_client(alice), [make_run()], QUERY_STRING="tenant=acme")
    assert response.status_code == 201
    assert post(user_client(charlie), [make_run()], QUERY_STRING="tenant=acme"
                ).status_code == 404


def test_the_classification_labels_accepted_are_the_models_own():
    from typing import get_args

    from runs.ingest_schema import Label
    from runs.models import Classification

    assert set(get_args(Label)) == set(Classification.values)
