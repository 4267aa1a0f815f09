"""How an MCP tool's outputs are compared in a replay (docs/operators/replay.md, "MCP
outputs"): both sides are reduced to what the tool answered, so the ways MCP can carry the
same answer (a JSON text block or structuredContent, keys in any order, annotations, _meta,
the protocol's own result fields) are never a divergence, and a changed answer always is."""

from __future__ import annotations

import json
from typing import Any

from operations.replay_compare import compare_outputs

ANSWER = {"invoice_id": "inv-7", "amount_cents": 1200, "lines": [{"sku": "a", "qty": 2}]}


def text_block(value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value if isinstance(value, str) else json.dumps(value),
            **extra}


def result(*content: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"content": list(content), "isError": False, **fields}


def mcp_compare(recorded: Any, replayed: Any, volatile: list[str] | None = None
                ) -> list[dict[str, Any]]:
    return compare_outputs(recorded, replayed, volatile or [], mcp=True)


def test_a_json_text_block_and_structured_content_of_the_same_json_do_not_diverge():
    recorded = result(text_block(ANSWER))
    replayed = result(text_block(ANSWER), structuredContent=ANSWER)
    assert mcp_compare(recorded, replayed) == []
    assert mcp_compare(recorded, ANSWER) == []  # the connector records the answer itself


def test_key_order_and_json_formatting_inside_a_text_block_do_not_diverge():
    reordered = json.dumps(dict(reversed(list(ANSWER.items()))), indent=2)
    assert mcp_compare(result(text_block(reordered)), result(text_block(ANSWER))) == []


def test_annotations_meta_and_protocol_fields_do_not_diverge():
    recorded = result(text_block(ANSWER, annotations={"audience": ["user"], "priority": 0.5},
                                 _meta={"client/trace": "t-1"}),
                      _meta={"io.example/request": "r-1"})
    replayed = result(text_block(ANSWER), structuredContent=ANSWER, resultType="complete",
                      ttlMs=0, cacheScope="private")
    assert mcp_compare(recorded, replayed) == []


def test_a_wrapped_scalar_result_and_its_text_do_not_diverge():
    """MCPServer answers a tool returning a string as {"result": ...} plus the text."""
    recorded = result(text_block("42 apples"))
    replayed = result(text_block("42 apples"), structuredContent={"result": "42 apples"})
    assert mcp_compare(recorded, replayed) == []


def test_a_changed_answer_diverges_at_its_path():
    changed = {**ANSWER, "amount_cents": 1300}
    assert mcp_compare(result(text_block(ANSWER)), result(structuredContent=changed,
                                                          content=[])) == [
        {"path": "$.amount_cents", "change": "changed", "recorded": 1200, "replayed": 1300}]


def test_volatile_fields_apply_inside_the_answer():
    replayed = result(structuredContent={**ANSWER, "fetched_at": "now"}, content=[])
    assert mcp_compare(result(text_block({**ANSWER, "fetched_at": "then"})), replayed,
                       ["fetched_at"]) == []


def test_an_error_result_diverges_from_a_success_with_the_same_text():
    recorded = result(text_block("invoice inv-7 is already paid"))
    replayed = {**recorded, "isError": True}
    [difference] = mcp_compare(recorded, replayed)
    assert difference["path"] == "$"
    assert difference["replayed"] == {"isError": True, "content": "invoice inv-7 is already paid"}


def test_several_blocks_keep_their_order_and_non_text_blocks_their_data():
    image = {"type": "image", "mimeType": "image/png", "data": "iVBORw0KGgo="}
    recorded = result(text_block("chart"), {**image, "annotations": {"priority": 1}})
    assert mcp_compare(recorded, result(text_block("chart"), image)) == []
    assert mcp_compare(recorded, result(image, text_block("chart")))
    other = {**image, "data": "R0lGODlh"}
    assert mcp_compare(recorded, result(text_block("chart"), other)) == [
        {"path": "$[1].data", "change": "changed", "recorded": "iVBORw0KGgo=",
         "replayed": "R0lGODlh"}]


def test_outputs_of_other_tools_are_compared_as_they_are():
    """An HTTP tool may answer an object that merely looks like an MCP result."""
    recorded = result(text_block(ANSWER))
    replayed = result(text_block(ANSWER), structuredContent=ANSWER)
    assert compare_outputs(recorded, replayed, [], mcp=False) == [
        {"path": "$.structuredContent", "change": "added", "recorded": None,
         "replayed": ANSWER}]
