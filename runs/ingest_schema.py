"""The ingestion batch format, validated with pydantic (fast, with precise error paths).

A batch is ``{"runs": [...]}``; each run carries the records to append to it. Every record in a
batch counts toward the record limit: a run, a step, a model call, a tool call, an annotation.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic import (
    AwareDatetime as PydanticAwareDatetime,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from core.payload_safety import EXTERNAL_ID_PATTERN, EXTERNAL_ID_RULE, unsafe_parts

from .models import ActionClass, AnnotationKind, RunStatus, ToolCallStatus


def _check_external_id(value: str) -> str:
    if not EXTERNAL_ID_PATTERN.match(value):
        raise ValueError(f"an id is {EXTERNAL_ID_RULE}")
    return value


def _check_optional_id(value: str) -> str:
    return _check_external_id(value) if value else value


def _check_utc_year(value: datetime) -> datetime:
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("the time falls outside years 1 to 9999 in UTC") from None
    return value


#: run, agent, call, step and annotation ids: safe in URLs, headers, file names and logs
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True),
                       AfterValidator(_check_external_id)]
#: an optional reference (trigger, tool call ref, idempotency key): empty or an id
OptionalId = Annotated[str, StringConstraints(max_length=200), AfterValidator(_check_optional_id)]
AwareDatetime = Annotated[PydanticAwareDatetime, AfterValidator(_check_utc_year)]
Label = Literal["public", "internal", "confidential", "restricted", "secret"]

_PATH = re.compile(r"^[A-Za-z_][\w-]*(\[\d+\]|\.[\w-]+|\[\*\])*$")


def _check_paths(value: dict[str, str]) -> dict[str, str]:
    for path in value:
        if not _PATH.match(path):
            raise ValueError(f"{path!r} is not a field path such as input.customer.email or "
                             "messages[0].content")
    return value


Classifications = Annotated[dict[str, Label], AfterValidator(_check_paths)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepIn(_Record):
    step_id: ExternalId
    index: int = Field(ge=0)
    title: str = Field(default="", max_length=500)
    status: str = Field(default="", max_length=20)
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class Usage(_Record):
    input_tokens: int | None = Field(default=None, ge=0)
    output_tokens: int | None = Field(default=None, ge=0)


class ModelCallIn(_Record):
    call_id: ExternalId
    step_id: ExternalId | None = None
    provider: str = Field(default="", max_length=100)
    model: str = Field(min_length=1, max_length=200)
    messages: list[Any] = Field(default_factory=list)
    response: Any = None
    #: the request beside the messages: model requested, parameters, tools offered
    request: dict[str, Any] | None = None
    usage: Usage = Field(default_factory=Usage)
    latency_ms: int | None = Field(default=None, ge=0)
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    error: Any = None
    classifications: Classifications = Field(default_factory=dict)


class ToolCallIn(_Record):
    call_id: ExternalId
    step_id: ExternalId | None = None
    tool: ExternalId
    action_class: ActionClass
    input: Any = Field(default_factory=dict)
    output: Any = None
    status: ToolCallStatus
    error: Any = None
    attempt: int = Field(default=1, ge=1, le=1000)
    retry_of: ExternalId | None = None
    started_at: AwareDatetime | None = None
    ended_at: AwareDatetime | None = None
    idempotency_key: OptionalId = ""
    supports_rollback: bool = False
    classifications: Classifications = Field(default_factory=dict)
    #: the tool call's own id (OpenTelemetry ``gen_ai.tool.call.id``); ``call_id`` is the ledger's
    tool_call_ref: OptionalId = ""

    @field_validator("input")
    @classmethod
    def _input_is_not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("input is never null; send {} for a call without input")
        return value

    @model_validator(mode="after")
    def _retry_is_consistent(self) -> ToolCallIn:
        if self.retry_of is not None and self.retry_of == self.call_id:
            raise ValueError("a call cannot be a retry of itself")
        if self.retry_of is not None and self.attempt < 2:
            raise ValueError("a retry (retry_of set) has attempt >= 2")
        if self.started_at and self.ended_at and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self


class AnnotationIn(_Record):
    annotation_id: ExternalId
    kind: Literal["note", "correction"] = AnnotationKind.NOTE.value  # type: ignore[assignment]
    target_call_id: OptionalId = ""
    body: str = Field(default="", max_length=20_000)
    data: dict[str, Any] = Field(default_factory=dict)


class RunIn(_Record):
    run_id: ExternalId
    agent_id: ExternalId
    agent_name: str = Field(default="", max_length=200)
    goal: str = Field(default="", max_length=20_000)
    trigger_ref: OptionalId = ""
    status: RunStatus = RunStatus.RUNNING
    started_at: AwareDatetime
    ended_at: AwareDatetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepIn] = Field(default_factory=list)
    model_calls: list[ModelCallIn] = Field(default_factory=list)
    tool_calls: list[ToolCallIn] = Field(default_factory=list)
    annotations: list[AnnotationIn] = Field(default_factory=list)

    @model_validator(mode="after")
    def _status_matches_end(self) -> RunIn:
        if self.status == RunStatus.RUNNING and self.ended_at is not None:
            raise ValueError("a running run has no ended_at")
        if self.ended_at is not None and self.ended_at < self.started_at:
            raise ValueError("ended_at is before started_at")
        return self

    @property
    def record_count(self) -> int:
        return 1 + len(self.steps) + len(self.model_calls) + len(self.tool_calls) + len(
            self.annotations)


class BatchIn(_Record):
    runs: list[RunIn] = Field(min_length=1)


def error_path(loc: tuple[int | str, ...]) -> str:
    """``('runs', 0, 'tool_calls', 3, 'status')`` -> ``runs[0].tool_calls[3].status``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "literal[", "enum[")):
            continue  # pydantic's names for validators and unions, not fields
        else:
            path += f".{part}" if path else part
    return path or "(batch)"


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [{"path": error_path(err["loc"]), "message": err["msg"]} for err in exc.errors(
        include_url=False)]


def refuse_unsafe_json(data: Any, title: str) -> None:
    """Raise a ``ValidationError`` naming every unsafe part of ``data`` (see payload_safety)."""
    problems = unsafe_parts(data)
    if problems:
        raise ValidationError.from_exception_data(title, [InitErrorDetails(
            type=PydanticCustomError("unsafe_json", reason), loc=loc, input=None)
            for loc, reason in problems])


def parse_batch(data: Any) -> BatchIn:
    refuse_unsafe_json(data, "BatchIn")
    return BatchIn.model_validate(data)


__all__ = ["AnnotationIn", "BatchIn", "ModelCallIn", "RunIn", "StepIn", "ToolCallIn",
           "parse_batch", "validation_errors"]
