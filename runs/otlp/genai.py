"""What a span means under the OpenTelemetry GenAI semantic conventions (v1.41.0).

One span at a time, no database: the operation it performs, and the ledger fields it carries.
Deprecated names are read where the current name is absent (``gen_ai.system`` for
``gen_ai.provider.name``, ``gen_ai.usage.prompt_tokens`` / ``completion_tokens`` for the input /
output tokens, ``gen_ai.prompt`` / ``gen_ai.completion`` and the per-message span events for the
captured messages), so older instrumentations land the same way.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from .wire import SpanDict

RUN_OPERATIONS = frozenset({"invoke_agent", "invoke_workflow"})
MODEL_OPERATIONS = frozenset({"chat", "generate_content", "text_completion", "embeddings"})
TOOL_OPERATIONS = frozenset({"execute_tool"})
MCP_TOOL_CALL = "tools/call"

# current name first, then the deprecated ones it replaced
PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
INPUT_TOKENS = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
OUTPUT_TOKENS = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
INPUT_MESSAGES = ("gen_ai.input.messages", "gen_ai.prompt")
OUTPUT_MESSAGES = ("gen_ai.output.messages", "gen_ai.completion")
TOOL_NAME = ("gen_ai.tool.name", "mcp.tool.name")

# Span events that carry content: the current one, and the deprecated per-message events.
DETAILS_EVENT = "gen_ai.client.inference.operation.details"
MESSAGE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
                  "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
CHOICE_EVENT = "gen_ai.choice"
PROMPT_EVENT = "gen_ai.content.prompt"  # older instrumentations: attribute gen_ai.prompt
COMPLETION_EVENT = "gen_ai.content.completion"  # ... and gen_ai.completion


class Kind:
    RUN = "run"
    MODEL_CALL = "model_call"
    TOOL_CALL = "tool_call"
    MCP_TOOL_CALL = "mcp_tool_call"
    OTHER_GENAI = "other_genai"  # a GenAI span with no ledger record (retrieval, create_agent)
    LABELLED_NOTE = "labelled_note"  # a note on the run saying what the span did (retrieval)
    NOT_GENAI = "not_genai"


def first(attrs: dict[str, Any], names: tuple[str, ...]) -> Any:
    for name in names:
        value = attrs.get(name)
        if value is not None and value != "":
            return value
    return None


def kind_of(span: SpanDict) -> str:
    attrs = span["attributes"]
    operation = attrs.get("gen_ai.operation.name")
    if operation in RUN_OPERATIONS:
        return Kind.RUN
    if operation in MODEL_OPERATIONS:
        return Kind.MODEL_CALL
    if operation in TOOL_OPERATIONS:
        return Kind.TOOL_CALL
    if attrs.get("mcp.method.name") == MCP_TOOL_CALL:
        # The server side of the same call belongs to the tool's own service, not the agent.
        return Kind.MCP_TOOL_CALL if span["kind"] == "client" else Kind.OTHER_GENAI
    if operation:
        return Kind.OTHER_GENAI
    if any(name.startswith("gen_ai.") for name in attrs):
        # Before gen_ai.operation.name existed, a model call was a span with gen_ai.system.
        if first(attrs, PROVIDER) and (first(attrs, INPUT_MESSAGES + OUTPUT_MESSAGES) or
                                       first(attrs, INPUT_TOKENS + OUTPUT_TOKENS) or
                                       attrs.get("gen_ai.request.model")):
            return Kind.MODEL_CALL
        return Kind.OTHER_GENAI
    if attrs.get("mcp.method.name"):
        return Kind.OTHER_GENAI
    return Kind.NOT_GENAI


def timestamp(nanos: int) -> datetime | None:
    if not nanos:
        return None
    # Integer arithmetic: a float of seconds loses microseconds, and hashes must be exact.
    return datetime.fromtimestamp(nanos // 1_000_000_000, tz=UTC).replace(
        microsecond=nanos // 1000 % 1_000_000)


def started(span: SpanDict) -> datetime | None:
    return timestamp(span["start_time_unix_nano"])


def ended(span: SpanDict) -> datetime | None:
    end = timestamp(span["end_time_unix_nano"])
    begin = started(span)
    if end is not None and begin is not None and end < begin:
        return begin  # a clock step inside the span; the ledger refuses ends before starts
    return end


def failed(span: SpanDict) -> bool:
    return span["status"]["code"] == "error" or bool(span["attributes"].get("error.type"))


def error_of(span: SpanDict) -> dict[str, Any] | None:
    if not failed(span):
        return None
    error: dict[str, Any] = {"type": span["attributes"].get("error.type") or "error"}
    if span["status"]["message"]:
        error["message"] = span["status"]["message"]
    for event in span["events"]:
        if event["name"] == "exception":
            attrs = event["attributes"]
            message = attrs.get("exception.message", "")
            # The status says what failed, the exception why: keep both when they differ.
            if "message" not in error:
                error["message"] = message
            elif message and message != error["message"]:
                error["exception_message"] = message
            if attrs.get("exception.type"):
                error["exception_type"] = attrs["exception.type"]
            if attrs.get("exception.stacktrace"):
                error["stacktrace"] = attrs["exception.stacktrace"]
            break
    return error


def structured(value: Any) -> Any:
    """Attributes carry structures as JSON strings (most SDKs) or as AnyValue lists / maps."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _as_list(value: Any) -> list[Any]:
    value = structured(value)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _truncate(text: Any, size: int) -> str:
    return str(text or "")[:size]


_NOT_IN_IDS = re.compile(r"[^A-Za-z0-9._:@-]+")


def as_ledger_id(text: Any, fallback: str = "") -> str:
    """A name as the ledger's ids allow it ([A-Za-z0-9._:@-], 1-200): frameworks name agents
    and tools in prose ("Support Agent"), so each run of other characters becomes one "-";
    the name itself is kept beside the id where the record has one."""
    return _NOT_IN_IDS.sub("-", str(text or "")).strip("-")[:200] or fallback


# -- the records -----------------------------------------------------------------------------


def messages_of(span: SpanDict) -> tuple[list[Any], Any]:
    """(input messages, output messages) from the attributes, else from the span events."""
    attrs = span["attributes"]
    inputs = _as_list(first(attrs, INPUT_MESSAGES))
    outputs = structured(first(attrs, OUTPUT_MESSAGES))
    event_inputs: list[Any] = []
    event_outputs: list[Any] = []
    for event in span["events"]:
        name, ev = event["name"], event["attributes"]
        if name == DETAILS_EVENT:
            event_inputs += _as_list(first(ev, INPUT_MESSAGES))
            event_outputs += _as_list(first(ev, OUTPUT_MESSAGES))
            if ev.get("gen_ai.system_instructions") and not attrs.get(
                    "gen_ai.system_instructions"):
                attrs = {**attrs, "gen_ai.system_instructions": ev["gen_ai.system_instructions"]}
        elif name in MESSAGE_EVENTS:
            event_inputs.append(_event_message(MESSAGE_EVENTS[name], ev))
        elif name == CHOICE_EVENT:
            event_outputs.append(_event_message("assistant", ev))
        elif name == PROMPT_EVENT:
            event_inputs += _as_list(ev.get("gen_ai.prompt"))
        elif name == COMPLETION_EVENT:
            event_outputs += _as_list(ev.get("gen_ai.completion"))
    if not inputs:
        inputs = event_inputs
    if outputs is None and event_outputs:
        outputs = event_outputs
    instructions = attrs.get("gen_ai.system_instructions")
    # Instrumentations that capture the instructions apart may also send them as the first
    # message: one system message, not two.
    if instructions and not any(isinstance(m, dict) and m.get("role") == "system"
                                for m in inputs):
        inputs = [{"role": "system", "parts": _as_list(instructions)}, *inputs]
    return inputs, outputs


def _event_message(role: str, attrs: dict[str, Any]) -> Any:
    body = {k: structured(v) for k, v in attrs.items() if k not in ("gen_ai.system",
                                                                       "gen_ai.provider.name")}
    content = body.pop("gen_ai.event.content", None)
    if isinstance(content, dict):
        body.update(content)
    elif content is not None:
        body["content"] = content
    body.setdefault("role", role)
    return body


def _tokens(attrs: dict[str, Any], names: tuple[str, ...]) -> int | None:
    value = first(attrs, names)
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def model_call(span: SpanDict, call_id: str, step_id: str | None) -> dict[str, Any]:
    attrs = span["attributes"]
    inputs, outputs = messages_of(span)
    response: dict[str, Any] = {}
    if outputs is not None:
        response["messages"] = outputs
    if attrs.get("gen_ai.response.finish_reasons"):
        response["finish_reasons"] = _as_list(attrs["gen_ai.response.finish_reasons"])
    if attrs.get("gen_ai.response.id"):
        response["id"] = attrs["gen_ai.response.id"]
    begin, end = started(span), ended(span)
    model = (attrs.get("gen_ai.response.model") or attrs.get("gen_ai.request.model") or
             _name_target(span) or "unknown")
    return {
        "call_id": call_id, "step_id": step_id,
        "provider": _truncate(first(attrs, PROVIDER), 100),
        "model": _truncate(model, 200),
        "messages": inputs,
        "response": response or None,
        "request": request_of(attrs),
        "usage": {"input_tokens": _tokens(attrs, INPUT_TOKENS),
                  "output_tokens": _tokens(attrs, OUTPUT_TOKENS)},
        "latency_ms": int((end - begin).total_seconds() * 1000) if begin and end else None,
        "started_at": begin, "ended_at": end,
        "error": error_of(span),
    }


def request_of(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """What was asked of the model beside the messages: the model named, the sampling
    parameters (``gen_ai.request.*``), the tools offered."""
    parameters = {name.removeprefix("gen_ai.request."): value for name, value in attrs.items()
                  if name.startswith("gen_ai.request.") and name != "gen_ai.request.model"}
    found = {"model": attrs.get("gen_ai.request.model"), "parameters": parameters or None,
             "output_type": attrs.get("gen_ai.output.type"),
             "tools": structured(attrs.get("gen_ai.tool.definitions"))}
    return {k: v for k, v in found.items() if v is not None and v != ""} or None


def tool_name(span: SpanDict) -> str:
    return as_ledger_id(first(span["attributes"], TOOL_NAME) or _name_target(span),
                        "unknown_tool")


def tool_call(span: SpanDict, call_id: str, step_id: str | None, action_class: str
              ) -> dict[str, Any]:
    attrs = span["attributes"]
    return tool_call_record(span, call_id, step_id, action_class, tool_name(span),
                            structured(attrs.get("gen_ai.tool.call.arguments")),
                            structured(attrs.get("gen_ai.tool.call.result")),
                            attrs.get("gen_ai.tool.call.id"))


def tool_call_record(span: SpanDict, call_id: str, step_id: str | None, action_class: str,
                     tool: str, arguments: Any, result: Any, ref: Any) -> dict[str, Any]:
    """A tool call's record from what a convention's reader found on its span."""
    return {
        # call_id is the ledger's (unique per tenant, stable on re-assembly); the tool call's
        # own id, as the model or framework named it, is kept beside it
        "call_id": call_id, "step_id": step_id,
        "tool_call_ref": "" if ref is None else as_ledger_id(ref),
        "tool": tool,
        "action_class": action_class,
        "input": {} if arguments is None else arguments,
        "output": result,
        "status": "failed" if failed(span) else "succeeded",
        "error": error_of(span),
        "started_at": started(span), "ended_at": ended(span),
    }


# (gen_ai.agent.id, gen_ai.agent.description) an instrumentation stamps on every span when
# not configured: its defaults, the same for every application, so no agent's id.
PLACEHOLDER_AGENTS = frozenset({
    ("agent", "OpenAI Agents instrumentation"),  # opentelemetry-instrumentation-openai-agents-v2
})


def agent_of(span: SpanDict) -> tuple[str, str] | None:
    """(agent_id, agent name) a run span's attributes name, if they name one: the OpenAI
    Agents SDK's root ``Agent workflow`` span, for one, names none."""
    attrs = span["attributes"]
    name = attrs.get("gen_ai.agent.name") or attrs.get("gen_ai.workflow.name") or ""
    given_id = attrs.get("gen_ai.agent.id")
    if (given_id, attrs.get("gen_ai.agent.description")) in PLACEHOLDER_AGENTS:
        given_id = None
    agent_id = as_ledger_id(given_id or name)
    return (agent_id, _truncate(name, 200)) if agent_id else None


def agent_named_by(span: SpanDict) -> tuple[str, str] | None:
    """The agent a run span's name gives (``invoke_agent planner``), when no attribute does."""
    target = _name_target(span) if span["name"].split(" ", 1)[0] in RUN_OPERATIONS else ""
    return (as_ledger_id(target), _truncate(target, 200)) if as_ledger_id(target) else None


def service_agent(span: SpanDict) -> tuple[str, str]:
    """The agent of a trace no span names one for: the service that sent it."""
    service = span["resource"].get("service.name") or "unknown_service"
    return as_ledger_id(f"otel:{service}", "otel:unknown_service"), _truncate(service, 200)


def goal_of(span: SpanDict) -> str:
    """The run's goal: the text of what the agent was asked (its input messages)."""
    inputs, _ = messages_of(span)
    return message_text([m for m in inputs if not isinstance(m, dict)
                         or m.get("role") not in ("system", "developer")])[:20_000]


def output_of(span: SpanDict) -> Any:
    return messages_of(span)[1]


def message_text(messages: list[Any]) -> str:
    """The text of captured messages (GenAI ``parts`` or older ``content``), else their JSON."""
    texts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            texts.append(str(message))
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        for part in message.get("parts") or []:
            if isinstance(part, dict) and part.get("type") == "text" and part.get("content"):
                texts.append(str(part["content"]))
    if texts or not messages:
        return "\n".join(texts)
    return orjson.dumps(messages).decode()


def run_metadata(run_span: SpanDict | None, any_span: SpanDict) -> dict[str, Any]:
    attrs = run_span["attributes"] if run_span else {}
    found = {
        "source": "opentelemetry",
        "trace_id": any_span["trace_id"],
        "run_span_id": run_span["span_id"] if run_span else None,
        "operation": attrs.get("gen_ai.operation.name"),
        "convention": "gen_ai" if attrs.get("gen_ai.operation.name") else None,
        "agent_version": attrs.get("gen_ai.agent.version"),
        "agent_description": attrs.get("gen_ai.agent.description"),
        "conversation_id": attrs.get("gen_ai.conversation.id"),
        "provider": first(attrs, PROVIDER),
        "request_model": attrs.get("gen_ai.request.model"),
        "service_name": any_span["resource"].get("service.name"),
    }
    return {k: v for k, v in found.items() if v is not None and v != ""}


def step(span: SpanDict, step_id: str, index: int) -> dict[str, Any]:
    attrs = span["attributes"]
    meta = {"operation": attrs.get("gen_ai.operation.name"),
            "agent_id": attrs.get("gen_ai.agent.id"), "agent_name": attrs.get("gen_ai.agent.name"),
            "agent_version": attrs.get("gen_ai.agent.version"),
            "span_id": span["span_id"], "error": error_of(span)}
    return {"step_id": step_id, "index": index, "title": _truncate(span["name"], 500),
            "status": "failed" if failed(span) else "succeeded",
            "started_at": started(span), "ended_at": ended(span),
            "metadata": {k: v for k, v in meta.items() if v is not None}}


def _name_target(span: SpanDict) -> str:
    """Span names are ``{operation} {target}``: ``chat gpt-4.1``, ``execute_tool get_weather``,
    ``tools/call get_weather``."""
    parts = span["name"].split(" ", 1)
    return parts[1].strip() if len(parts) == 2 else ""
