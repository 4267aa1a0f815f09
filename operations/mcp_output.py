"""What an MCP tool answered, in one form (docs/operators/replay.md, "MCP outputs").

A ``tools/call`` result can carry one answer in several ways: a JSON text block, the same JSON
as ``structuredContent``, pretty-printed or not, with ``annotations`` and ``_meta`` on the
result and on each block, and the protocol's own result fields (``resultType``, ``ttlMs``,
``cacheScope``). An agent's MCP client records one of them, the portal's connector receives
another. ``mcp_answer`` reduces any of them to the answer itself:

- ``structuredContent`` when the result has it (``{"result": v}``, the SDK's wrapping of a
  non-object return, is ``v`` when the text says ``v``);
- otherwise the content: one block is its value, several a list in their order; a text block's
  value is its JSON parsed (its text when it is not JSON); another block (image, audio,
  resource, resource link) is the block without its annotations and ``_meta``;
- an error result (``isError``) is ``{"isError": true, "content": <that value>}``.

Anything that is not an MCP result (a list of content blocks counts as one) is left as it is.
"""

from __future__ import annotations

from typing import Any

import orjson

RESULT_FIELDS = frozenset({"content", "structuredContent", "structured_content", "isError",
                           "is_error", "_meta", "meta", "resultType", "result_type", "ttlMs",
                           "ttl_ms", "cacheScope", "cache_scope"})
BLOCK_TYPES = frozenset({"text", "image", "audio", "resource", "resource_link"})
UNCOMPARED_BLOCK_FIELDS = frozenset({"annotations", "_meta", "meta"})


def _is_block(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") in BLOCK_TYPES


def is_mcp_result(value: Any) -> bool:
    """The JSON form of a CallToolResult (camelCase as on the wire, or snake_case)."""
    return (isinstance(value, dict) and set(value) <= RESULT_FIELDS
            and isinstance(value.get("content"), list)
            and all(_is_block(block) for block in value["content"]))


def _block_value(block: dict[str, Any]) -> Any:
    if block["type"] == "text" and isinstance(block.get("text"), str):
        try:
            return orjson.loads(block["text"])
        except orjson.JSONDecodeError:
            return block["text"]
    return {k: v for k, v in block.items() if k not in UNCOMPARED_BLOCK_FIELDS}


def content_value(blocks: list[dict[str, Any]]) -> Any:
    values = [_block_value(block) for block in blocks]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _first(result: dict[str, Any], *names: str) -> Any:
    return next((result[name] for name in names if result.get(name) is not None), None)


def mcp_answer(value: Any) -> Any:
    """The answer an MCP result carries (see the module); other values unchanged."""
    if hasattr(value, "model_dump"):  # the SDK's CallToolResult
        value = value.model_dump(by_alias=True, mode="json", exclude_none=True)
    if isinstance(value, list) and value and all(_is_block(block) for block in value):
        return content_value(value)
    if not is_mcp_result(value):
        return value
    content = content_value(value["content"])
    answer = _first(value, "structuredContent", "structured_content")
    wrapped = isinstance(answer, dict) and set(answer) == {"result"}
    if answer is None or (wrapped and answer["result"] == content):
        answer = content
    if _first(value, "isError", "is_error"):
        return {"isError": True, "content": answer}
    return answer


__all__ = ["content_value", "is_mcp_result", "mcp_answer"]
