"""A poisoned proposed call is a 400 naming its path, and no decision is stored."""

from __future__ import annotations

import pytest

from policies.models import Decision

URL = "/api/v1/decisions/"


@pytest.fixture
def agent(acme, key_client, publish):
    publish([{"name": "reads are fine", "action_classes": ["read"], "effect": "allow"}])
    return key_client(acme, ["ingest"])


def body(**changes: object) -> dict[str, object]:
    return {"run_id": "run-1", "call_id": "c-1", "agent_id": "billing-bot", "tool": "lookup",
            "action_class": "read", "arguments": {}, **changes}


@pytest.mark.parametrize("field", ["run_id", "call_id", "agent_id", "tool"])
@pytest.mark.parametrize("bad", ["a/b", "a#b", "a b", "a\r\nb"])
def test_an_id_outside_the_id_character_set_is_refused(agent, field, bad):
    response = agent.post(URL, body(**{field: bad}), format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Decision.objects.exists()


@pytest.mark.parametrize(("raw", "path"), [
    (b'{"a": {"b": 18446744073709551616}}', "arguments.a.b"),
    (b'{"a": [9223372036854775808]}', "arguments.a[0]"),
    (b'{"a": "nul \\u0000"}', "arguments.a"),
    (b'{"d": ' + b"[" * 100 + b"]" * 100 + b"}", "arguments.d"),
], ids=["2^64", "2^63", "nul", "deep"])
def test_poison_in_the_arguments_is_refused_at_its_path(agent, raw, path):
    payload = b'{"run_id": "run-1", "call_id": "c-1", "tool": "lookup", "action_class": "read",' \
              b' "arguments": ' + raw + b"}"
    response = agent.post(URL, data=payload, content_type="application/json")
    assert response.status_code == 400, response.content
    assert any(found.startswith(path) for found in response.json()), response.json()
    assert not Decision.objects.exists()


def test_a_clean_proposal_is_decided(agent):
    response = agent.post(URL, body(arguments={"n": 2**63 - 1}), format="json")
    assert response.status_code == 201, response.content
