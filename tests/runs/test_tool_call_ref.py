"""A tool call's own call id (``tool_call_ref``, e.g. OTLP ``gen_ai.tool.call.id``) is an
optional content field: committed to by the hash when set, absent from the canonical content
when empty, so every record recorded without it hashes exactly as before the field existed."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from core.canonical import content_hash
from runs.models import Run, ToolCall

URL = "/api/v1/batches/"

RUN: dict[str, Any] = {
    "run_id": "pinned-run", "agent_id": "pinned-agent", "goal": "refund order 42",
    "started_at": "2026-01-02T03:04:05.123456Z", "status": "running",
    "tool_calls": [{
        "call_id": "pinned-call", "tool": "refunds.issue", "action_class": "write",
        "input": {"order": 42, "amount": "12.50"}, "output": {"refund_id": "r-1"},
        "status": "succeeded", "started_at": "2026-01-02T03:04:06Z",
        "ended_at": "2026-01-02T03:04:07.5Z", "idempotency_key": "idem-1",
    }],
}

# Computed by the code BEFORE tool_call_ref existed (commit b33fb9b): a tool call recorded
# without the field must keep hashing to exactly these values.
PINNED_TOOL_CALL_CONTENT_HASH = "e70cb9f3ad778d47cca4236ec743193598e070a5f3719eb9527c41614418edd5"
PINNED_TOOL_CALL_CHAIN_HASH = "5dccd81dd28a93e371f66a696e48375b67ee31c845de8754459e3aa4984dea6b"


def post(client, runs):
    return client.post(URL, data=orjson.dumps({"runs": runs}), content_type="application/json")


@pytest.fixture
def client(acme, key_client):
    return key_client(acme)


def test_a_tool_call_without_the_ref_hashes_exactly_as_before(client):
    assert post(client, [RUN]).status_code == 201
    call = ToolCall.objects.select_related("run", "tool", "step", "retry_of").get()
    assert call.content_hash == PINNED_TOOL_CALL_CONTENT_HASH
    assert call.chain_hash == PINNED_TOOL_CALL_CHAIN_HASH
    assert content_hash(call.ledger_content()) == PINNED_TOOL_CALL_CONTENT_HASH
    assert "tool_call_ref" not in call.ledger_content()
    assert call.tool_call_ref == ""


def test_a_run_recorded_before_the_field_verifies_and_exports_without_it(acme, client):
    from runs.integrity import verify_tenant

    assert post(client, [RUN]).status_code == 201
    assert verify_tenant(acme).intact
    assert client.get(f"/api/v1/tool-calls/{RUN['tool_calls'][0]['call_id']}/").json()[
        "tool_call_ref"] == ""


def with_ref(ref: str) -> dict[str, Any]:
    run = copy.deepcopy(RUN)
    run["tool_calls"][0]["tool_call_ref"] = ref
    return run


def test_a_tool_call_with_the_ref_commits_to_it(client):
    assert post(client, [with_ref("call_abc")]).status_code == 201
    call = ToolCall.objects.select_related("run", "tool", "step", "retry_of").get()
    assert call.tool_call_ref == "call_abc"
    assert call.ledger_content()["tool_call_ref"] == "call_abc"
    assert call.content_hash == content_hash(call.ledger_content())
    assert call.content_hash != PINNED_TOOL_CALL_CONTENT_HASH
    assert content_hash({**call.ledger_content(), "tool_call_ref": "other"}) != call.content_hash


def test_the_read_api_and_the_timeline_show_the_ref(acme, alice, client, user_client):
    assert post(client, [with_ref("call_abc")]).status_code == 201
    detail = client.get(f"/api/v1/tool-calls/{RUN['tool_calls'][0]['call_id']}/")
    assert detail.status_code == 200
    assert detail.json()["tool_call_ref"] == "call_abc"
    run = client.get(f"/api/v1/runs/{RUN['run_id']}/").json()
    tool_calls = [r for r in run["timeline"] if r["kind"] == "tool_call"]
    assert tool_calls[0]["tool_call_ref"] == "call_abc"
    page = user_client(alice).get(f"/runs/acme/{RUN['run_id']}/")
    assert page.status_code == 200
    assert "call_abc" in page.content.decode()


def test_resending_the_same_batch_with_the_ref_is_idempotent(client):
    assert post(client, [with_ref("call_abc")]).status_code == 201
    again = post(client, [with_ref("call_abc")])
    assert again.status_code == 200, again.content
    assert again.json()["unchanged"]["tool_calls"] == 1
    assert ToolCall.objects.count() == 1


def test_resending_without_the_ref_after_none_is_idempotent(client):
    assert post(client, [RUN]).status_code == 201
    assert post(client, [with_ref("")]).status_code == 200


@pytest.mark.parametrize(("first", "then"), [("call_abc", "call_xyz"), ("", "call_abc"),
                                             ("call_abc", "")])
def test_changing_only_the_ref_is_a_409_naming_it(client, first, then):
    assert post(client, [with_ref(first)]).status_code == 201
    head = Run.objects.get().head_hash
    response = post(client, [with_ref(then)])
    assert response.status_code == 409, response.content
    problem = response.json()["errors"][0]
    assert problem["path"] == "runs[0].tool_calls[0]"
    assert "tool_call_ref" in problem["message"]
    assert problem["message"].endswith("different tool_call_ref")
    assert Run.objects.get().head_hash == head
    assert ToolCall.objects.get().tool_call_ref == first


def test_the_ref_is_at_most_200_characters(client):
    response = post(client, [with_ref("x" * 201)])
    assert response.status_code == 400
    assert response.json()["errors"][0]["path"] == "runs[0].tool_calls[0].tool_call_ref"


@pytest.mark.parametrize(("recorded", "tampered"), [("call_abc", "call_xyz"), ("call_abc", ""),
                                                    ("", "call_xyz")])
def test_tampering_the_column_is_caught_by_ledger_verify(acme, alice, client, capsys, recorded,
                                                         tampered):
    from core.cli_support import EXIT_OK, EXIT_TAMPERED
    from ledger_portal.cli import main
    from runs.integrity import verify_tenant
    from tests.runs.test_tamper_detection import bypassing_triggers

    assert post(client, [with_ref(recorded)]).status_code == 201
    assert main(["--as", "alice", "verify", "--quiet"]) == EXIT_OK
    call = ToolCall.objects.get()
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET tool_call_ref = %s WHERE id = %s",
                       [tampered, call.pk])
    report = verify_tenant(acme)
    assert [(b.run_id, b.seq, b.problem) for b in report.breaks] == [
        (RUN["run_id"], call.seq, "modified")]
    assert main(["--as", "alice", "verify", "--tenant", "acme", "--quiet"]) == EXIT_TAMPERED
    capsys.readouterr()
