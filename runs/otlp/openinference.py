"""What a span means under OpenInference, Arize Phoenix's convention.

One span at a time, no database, the same questions ``genai`` answers for the OpenTelemetry
GenAI conventions: what the span is (``openinference.span.kind``) and the ledger fields it
carries. Attribute names are those of the ``openinference-semantic-conventions`` package
(0.1.x): lists are flattened into one attribute per leaf
(``llm.input_messages.0.message.tool_calls.1.tool_call.function.name``), and are put back
together here in the shape the OpenAI API gives them.

- AGENT and CHAIN: the outermost is the run, nested ones are steps;
- LLM: a model call; TOOL: a tool call;
- RETRIEVER, EMBEDDING, RERANKER, GUARDRAIL, EVALUATOR: a note on the run, labelled with the
  kind, carrying what the span says (embedding vectors left out: numbers, not content);
- anything else (PROMPT, UNKNOWN, ...): kept raw, as any span no record fits.
"""

from __future__ import annotations

from typing import Any

from .genai import (
    Kind,
    as_ledger_id,
    ended,
    error_of,
    failed,
    first,
    started,
    structured,
    tool_call_record,
)
from .wire import SpanDict

SPAN_KIND = "openinference.span.kind"
CONVENTION = "openinference"

RUN_KINDS = frozenset({"AGENT", "CHAIN"})
NOTE_KINDS = frozenset({"RETRIEVER", "EMBEDDING", "RERANKER", "GUARDRAIL", "EVALUATOR"})

PROVIDER = ("llm.provider", "llm.system")
MODEL = ("llm.response.model_name", "llm.model_name", "llm.request.model_name")
TOOL_CALL_REF = ("tool_call.id", "tool.id")

# Flattened lists whose items are wrapped in one key (``N.message.role``): unwrapped on reading.
_WRAPPERS = frozenset({"message", "tool_call", "message_content", "document", "embedding",
                       "image", "audio", "video", "tool"})
# Leaves that carry JSON text: parsed, as GenAI's gen_ai.tool.call.arguments is.
_JSON_LEAVES = frozenset({"arguments", "function_call_arguments_json", "metadata",
                          "json_schema"})
# What the labelled notes read into their own keys; the rest stays under "attributes".
_NOTE_LISTS = {"documents": ("retrieval.documents", "reranker.output_documents"),
               "input_documents": ("reranker.input_documents",),
               "embeddings": ("embedding.embeddings",)}


def is_openinference(span: SpanDict) -> bool:
    return bool(span["attributes"].get(SPAN_KIND))


def span_kind(span: SpanDict) -> str:
    return str(span["attributes"].get(SPAN_KIND) or "").upper()


def kind_of(span: SpanDict) -> str:
    kind = span_kind(span)
    if kind in RUN_KINDS:
        return Kind.RUN
    if kind == "LLM":
        return Kind.MODEL_CALL
    if kind == "TOOL":
        return Kind.TOOL_CALL
    if kind in NOTE_KINDS:
        return Kind.LABELLED_NOTE
    return Kind.OTHER_GENAI


def unflatten(attrs: dict[str, Any], prefix: str) -> list[Any]:
    """``prefix.N.wrapper.key...`` attributes back into the list they were flattened from."""
    tree: dict[str, Any] = {}
    dotted = prefix + "."
    for key, value in attrs.items():
        if not key.startswith(dotted):
            continue
        *path, leaf = key[len(dotted):].split(".")
        node = tree
        for part in path:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        if not isinstance(node.get(leaf), dict):
            node[leaf] = structured(value) if leaf in _JSON_LEAVES else value
    items = _rebuild(tree)
    return items if isinstance(items, list) else []


def _rebuild(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(key.isdigit() for key in node):
        return [_rebuild(node[key]) for key in sorted(node, key=int)]
    if len(node) == 1 and next(iter(node)) in _WRAPPERS:
        return _rebuild(next(iter(node.values())))
    return {key: _rebuild(value) for key, value in node.items()}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _tokens(attrs: dict[str, Any], name: str) -> int | None:
    try:
        number = int(attrs.get(name))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


# -- the records -----------------------------------------------------------------------------


def model_call(span: SpanDict, call_id: str, step_id: str | None) -> dict[str, Any]:
    attrs = span["attributes"]
    parameters = structured(attrs.get("llm.invocation_parameters"))
    parameters = parameters if isinstance(parameters, dict) else {}
    messages = unflatten(attrs, "llm.input_messages")
    if not messages and attrs.get("llm.prompts") is not None:
        messages = [{"role": "user", "content": p} for p in _as_list(attrs["llm.prompts"])]
    if not messages and attrs.get("input.value") is not None:
        messages = [{"input": structured(attrs["input.value"])}]
    response: dict[str, Any] = {}
    outputs = unflatten(attrs, "llm.output_messages")
    if outputs:
        response["messages"] = outputs
    elif attrs.get("output.value") is not None:
        response["output"] = structured(attrs["output.value"])
    if attrs.get("llm.finish_reason"):
        response["finish_reason"] = attrs["llm.finish_reason"]
    if _tokens(attrs, "llm.token_count.total") is not None:
        response["total_tokens"] = _tokens(attrs, "llm.token_count.total")
    request = {k: v for k, v in {
        "model": attrs.get("llm.request.model_name") or parameters.get("model"),
        "parameters": {k: v for k, v in parameters.items() if k != "model"} or None,
        "tools": unflatten(attrs, "llm.tools") or None,
    }.items() if v is not None}
    begin, end = started(span), ended(span)
    model = first(attrs, MODEL) or parameters.get("model") or span["name"] or "unknown"
    return {
        "call_id": call_id, "step_id": step_id,
        "provider": _text(first(attrs, PROVIDER))[:100],
        "model": _text(model)[:200],
        "messages": messages,
        "response": response or None,
        "request": request or None,
        "usage": {"input_tokens": _tokens(attrs, "llm.token_count.prompt"),
                  "output_tokens": _tokens(attrs, "llm.token_count.completion")},
        "latency_ms": int((end - begin).total_seconds() * 1000) if begin and end else None,
        "started_at": begin, "ended_at": end,
        "error": error_of(span),
    }


def _as_list(value: Any) -> list[Any]:
    value = structured(value)
    return value if isinstance(value, list) else [value]


def tool_name(span: SpanDict) -> str:
    return as_ledger_id(span["attributes"].get("tool.name") or span["name"], "unknown_tool")


def tool_call(span: SpanDict, call_id: str, step_id: str | None, action_class: str
              ) -> dict[str, Any]:
    attrs = span["attributes"]
    return tool_call_record(span, call_id, step_id, action_class, tool_name(span),
                            structured(attrs.get("input.value")),
                            structured(attrs.get("output.value")), first(attrs, TOOL_CALL_REF))


def agent_of(span: SpanDict) -> tuple[str, str] | None:
    """(agent_id, name) a span's attributes name (``agent.name``)."""
    attrs = span["attributes"]
    name = attrs.get("agent.name") or attrs.get("graph.node.name") or ""
    agent_id = as_ledger_id(name)
    return (agent_id, _text(name)[:200]) if agent_id else None


def agent_named_by(span: SpanDict) -> tuple[str, str] | None:
    """An AGENT span's name, when no attribute names the agent (a CHAIN's name is a step's,
    not an agent's). The OpenAI Agents SDK's root ``Agent workflow`` span is one such: the
    agents named below it come first."""
    if span_kind(span) != "AGENT":
        return None
    agent_id = as_ledger_id(span["name"])
    return (agent_id, span["name"][:200]) if agent_id else None


def goal_of(span: SpanDict) -> str:
    return _text(span["attributes"].get("input.value"))[:20_000]


def output_of(span: SpanDict) -> Any:
    return structured(span["attributes"].get("output.value"))


def run_metadata(span: SpanDict) -> dict[str, Any]:
    attrs = span["attributes"]
    found = {"convention": CONVENTION, "span_kind": span_kind(span),
             "agent_name": attrs.get("agent.name"), "graph_node_id": attrs.get("graph.node.id"),
             "metadata": structured(attrs.get("metadata")),
             "tags": attrs.get("tag.tags")}
    return {k: v for k, v in found.items() if v is not None and v != ""}


def step(span: SpanDict, step_id: str, index: int) -> dict[str, Any]:
    attrs = span["attributes"]
    meta = {"convention": CONVENTION, "span_kind": span_kind(span),
            "agent_name": attrs.get("agent.name"), "graph_node_id": attrs.get("graph.node.id"),
            "input": structured(attrs.get("input.value")),
            "output": structured(attrs.get("output.value")),
            "span_id": span["span_id"], "error": error_of(span)}
    return {"step_id": step_id, "index": index, "title": span["name"][:500],
            "status": "failed" if failed(span) else "succeeded",
            "started_at": started(span), "ended_at": ended(span),
            "metadata": {k: v for k, v in meta.items() if v is not None}}


def note(span: SpanDict, annotation_id: str) -> dict[str, Any]:
    """A RETRIEVER, EMBEDDING, RERANKER, GUARDRAIL or EVALUATOR span as a labelled note."""
    attrs = span["attributes"]
    kind = span_kind(span)
    data: dict[str, Any] = {"label": kind.lower(), "span_name": span["name"],
                            "span_id": span["span_id"],
                            "input": structured(attrs.get("input.value")),
                            "output": structured(attrs.get("output.value"))}
    consumed = {"input.value", "output.value", SPAN_KIND}
    for key, prefixes in _NOTE_LISTS.items():
        for prefix in prefixes:
            items = unflatten(attrs, prefix)
            consumed.update(k for k in attrs if k.startswith(prefix + "."))
            if items:
                data[key] = [_without_vector(item) for item in items]
                break
    rest = {k: structured(v) for k, v in attrs.items() if k not in consumed}
    if rest:
        data["attributes"] = rest
    error = error_of(span)
    if error:
        data["error"] = error
    begin, end = started(span), ended(span)
    data.update(started_at=begin.isoformat() if begin else None,
                ended_at=end.isoformat() if end else None)
    summary = f"OpenInference {kind} span {span['name'][:200]!r}"
    if data["input"] is not None:
        summary += f" on {_text(data['input'])[:500]!r}"
    return {"annotation_id": annotation_id, "kind": "note", "body": summary,
            "data": {k: v for k, v in data.items() if v is not None}}


def _without_vector(item: Any) -> Any:
    return {k: v for k, v in item.items() if k != "vector"} if isinstance(item, dict) else item
