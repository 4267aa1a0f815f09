"""No input can break a page: a poisoned batch is a 400 naming the path, with nothing written."""

from __future__ import annotations

import orjson
import pytest

from runs.models import Annotation, ModelCall, Run, Step, ToolCall

URL = "/api/v1/batches/"


def post(client, runs):
    return client.post(URL, data=orjson.dumps({"runs": runs}), content_type="application/json")


def post_raw(client, body: bytes):
    return client.post(URL, data=body, content_type="application/json")


def counts():
    return (Run.objects.count(), Step.objects.count(), ModelCall.objects.count(),
            ToolCall.objects.count(), Annotation.objects.count())


@pytest.fixture
def client(acme, key_client):
    return key_client(acme)


def assert_refused(response, path: str, before) -> None:
    assert response.status_code == 400, response.content
    assert path in {e["path"] for e in response.json()["errors"]}, response.json()
    assert counts() == before


@pytest.mark.parametrize("bad", ["a/b", "a#b", "a b", "a\r\nb", "a?b", "a%2Fb", "ä"])
def test_a_run_id_outside_the_id_character_set_is_refused(client, make_run, bad):
    run = make_run()
    run["run_id"] = bad
    before = counts()
    assert_refused(post(client, [run]), "runs[0].run_id", before)


@pytest.mark.parametrize("field", ["agent_id", "trigger_ref"])
def test_every_external_id_of_a_run_is_restricted(client, make_run, field):
    run = make_run()
    run[field] = "x/y"
    before = counts()
    assert_refused(post(client, [run]), f"runs[0].{field}", before)


@pytest.mark.parametrize("field", ["call_id", "tool_call_ref", "idempotency_key", "step_id"])
def test_every_external_id_of_a_tool_call_is_restricted(client, make_run, field):
    run = make_run()
    run["tool_calls"][0][field] = "x #y"
    before = counts()
    assert_refused(post(client, [run]), f"runs[0].tool_calls[0].{field}", before)


def test_ids_of_the_documented_character_set_land(client, make_run):
    run = make_run()
    run["run_id"] = "otel-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7:a.b@c_d"
    assert post(client, [run]).status_code == 201


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1, 2**64, 10**30])
def test_an_integer_outside_signed_64_bits_is_refused_at_its_path(client, make_run, number):
    run = make_run()
    run["tool_calls"][0]["input"] = {"a": {"b": 0}}
    body = orjson.dumps({"runs": [run]}).replace(b'"b":0', b'"b":' + str(number).encode())
    before = counts()
    assert_refused(post_raw(client, body), "runs[0].tool_calls[0].input.a.b", before)


def test_the_signed_64_bit_bounds_themselves_land(client, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = {"hi": 2**63 - 1, "lo": -(2**63)}
    assert post(client, [run]).status_code == 201


def test_a_nul_character_is_refused_in_values_and_keys(client, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = {"a": ["ok", "x\x00y"], "k\x00": 1}
    before = counts()
    response = post(client, [run])
    assert_refused(response, "runs[0].tool_calls[0].input.a[1]", before)
    assert_refused(response, "runs[0].tool_calls[0].input", before)


def test_nesting_beyond_the_limit_is_refused(client, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = {"deep": 0}
    deep = b"[" * 254 + b"1" + b"]" * 254  # deeper than orjson itself will write
    body = orjson.dumps({"runs": [run]}).replace(b'"deep":0', b'"deep":' + deep)
    before = counts()
    response = post_raw(client, body)
    assert response.status_code == 400, response.content
    assert response.json()["errors"][0]["path"].startswith("runs[0].tool_calls[0].input.deep[0]")
    assert counts() == before


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_timestamp_outside_years_1_to_9999_in_utc_is_refused(client, make_run, stamp):
    run = make_run()
    run["started_at"] = stamp
    run.pop("ended_at", None)
    run["status"] = "running"
    before = counts()
    assert_refused(post(client, [run]), "runs[0].started_at", before)


def test_a_null_input_is_refused_at_its_path(client, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = None
    before = counts()
    assert_refused(post(client, [run]), "runs[0].tool_calls[0].input", before)
