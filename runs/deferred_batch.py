"""Lenient batch ingestion: what a newer agent sends that this portal does not know yet.

In a tenant whose ``batch_unknown_fields`` is ``lenient``, a batch refused only for fields or
enum values the schema does not know is split: the unknown fields are taken off their records
(the records land without them), a record with an unknown enum value is taken out whole (a run
with an unknown status is recorded as running, its end kept), and each is kept as a deferred
item. Any other problem refuses the batch as strict mode does: nothing is recorded.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson
from pydantic import ValidationError

from .ingest_schema import (
    AnnotationIn,
    BatchIn,
    ModelCallIn,
    RunIn,
    StepIn,
    ToolCallIn,
    error_path,
    parse_batch,
    validation_errors,
)
from .models import DeferredReason, DeferredSource

UNKNOWN_FIELD_ERRORS = frozenset({"extra_forbidden"})
UNKNOWN_VALUE_ERRORS = frozenset({"enum", "literal_error"})
CHILD_MODELS: dict[str, type[Any]] = {"steps": StepIn, "model_calls": ModelCallIn,
                                      "tool_calls": ToolCallIn, "annotations": AnnotationIn}
#: what a run's end is: taken off together when its status is an unknown value
RUN_END_FIELDS = ("status", "ended_at")


@dataclass(frozen=True)
class DeferredIn:
    """An item to keep: what was received, why it was not placed, and the run it belongs to."""

    source: str
    reason_code: str
    reason: str
    payload: Any
    run_id: str
    key: str


class HeldBackInvalid(ValueError):
    """What remains of a lenient batch is still invalid (``problems``, paths as sent)."""

    def __init__(self, problems: list[dict[str, str]]):
        super().__init__("; ".join(f"{p['path']}: {p['message']}" for p in problems[:5]))
        self.problems = problems


def content_key(prefix: str, *parts: Any) -> str:
    """The same content received again is the same item (a retried batch adds none)."""
    digest = hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{prefix}:{digest}"


def parse_for_tenant(data: Any, lenient: bool) -> tuple[BatchIn, list[DeferredIn]]:
    """The batch to record and what to defer. Raises ``ValidationError`` as ``parse_batch``
    does for anything lenient mode does not take (and for everything in strict mode)."""
    try:
        return parse_batch(data), []
    except ValidationError as exc:
        if not lenient:
            raise
        errors = exc.errors(include_url=False)
        if any(e["type"] not in UNKNOWN_FIELD_ERRORS | UNKNOWN_VALUE_ERRORS for e in errors):
            raise
        cleaned, deferred = _split(data, errors)
    try:
        return parse_batch(cleaned), deferred
    except ValidationError as exc:
        raise HeldBackInvalid(as_received(validation_errors(exc), deferred)) from exc


def _plain(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's names for validators and unions (not keys of the data)."""
    return tuple(part for part in loc if isinstance(part, int) or not part.startswith(
        ("function-", "literal[", "enum[")))


def _owner(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(the record an error is about: (), (i,) or (i, kind, j); the field path inside it)."""
    if len(loc) >= 4 and loc[0] == "runs" and loc[2] in CHILD_MODELS and isinstance(loc[3], int):
        return (loc[1], loc[2], loc[3]), loc[4:]
    if len(loc) >= 2 and loc[0] == "runs" and isinstance(loc[1], int):
        return (loc[1],), loc[2:]
    return (), loc


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        data = data[part]
    return data


def _dotted(path: tuple[Any, ...]) -> str:
    return error_path(path) if path else "(record)"


def _split(data: Any, errors: list[Any]) -> tuple[Any, list[DeferredIn]]:
    cleaned = copy.deepcopy(data)
    fields: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    values: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for error in errors:
        owner, path = _owner(_plain(error["loc"]))
        (fields if error["type"] in UNKNOWN_FIELD_ERRORS else values).setdefault(
            owner, []).append(path)
    deferred: list[DeferredIn] = []
    dropped: dict[tuple[int, str], set[int]] = {}
    for owner in sorted(fields.keys() | values.keys(), key=repr):
        run = data["runs"][owner[0]] if owner else {}
        if len(owner) == 3 and owner in values:  # the whole record waits
            i, kind, j = owner
            dropped.setdefault((i, kind), set()).add(j)
            record = data["runs"][i][kind][j]
            deferred.append(_item(DeferredReason.UNKNOWN_VALUE, kind, owner, run, record,
                                  {"fields": sorted(_dotted(p) for p in values[owner])}))
            continue
        if len(owner) == 1 and owner in values:
            end = {name: run[name] for name in RUN_END_FIELDS if name in run}
            for name in RUN_END_FIELDS:
                cleaned["runs"][owner[0]].pop(name, None)
            deferred.append(_item(DeferredReason.UNKNOWN_VALUE, "run_end", owner, run, end,
                                  {"fields": sorted(_dotted(p) for p in values[owner])}))
        if owner in fields:
            base = ("runs", *owner) if owner else ()
            unknown = {}
            for path in fields[owner]:
                unknown[_dotted(path)] = _at(data, base + path)
                parent = _at(cleaned, base + path[:-1])
                parent.pop(path[-1], None)
            record = _at(data, base) if owner else {k: v for k, v in data.items()
                                                    if k != "runs"}
            if len(owner) == 1:
                record = {k: v for k, v in record.items() if k not in CHILD_MODELS}
            kind = owner[1] if len(owner) == 3 else ("run" if owner else "batch")
            deferred.append(_item(DeferredReason.UNKNOWN_FIELD, kind, owner, run, record,
                                  {"unknown": unknown}))
    for (i, kind), indexes in dropped.items():
        cleaned["runs"][i][kind] = [r for j, r in enumerate(cleaned["runs"][i][kind])
                                    if j not in indexes]
    return cleaned, deferred


def _item(code: str, kind: str, owner: tuple[Any, ...], run: Any, record: Any,
          detail: dict[str, Any]) -> DeferredIn:
    path = error_path(("runs", *owner)) if owner else "(batch)"
    run_id = str(run.get("run_id", "")) if isinstance(run, dict) else ""
    if code == DeferredReason.UNKNOWN_VALUE:
        what = ", ".join(detail["fields"])
        reason = (f"{path}: the value of {what} is not one this portal knows; the "
                  + ("run was recorded as running, its end waits" if kind == "run_end" else
                     "record waits whole"))
    else:
        reason = (f"{path}: field(s) {', '.join(detail['unknown'])} are not in this portal's "
                  "schema; the rest of the record was recorded")
    payload = {"kind": kind, "path": path, "run_id": run_id,
               "agent_id": run.get("agent_id", "") if isinstance(run, dict) else "",
               "record": record, **detail}
    return DeferredIn(DeferredSource.BATCH, code, reason, payload, run_id,
                      content_key("batch", code, kind, run_id, record, detail))


_RECORD_PATH = re.compile(r"^runs\[(\d+)\]\.(\w+)\[(\d+)\]")


def as_received(problems: list[dict[str, str]], deferred: list[DeferredIn]
                ) -> list[dict[str, str]]:
    """``problems`` found in the batch lenient mode recorded, with their paths as the sender
    wrote them: records held back whole no longer count in their list's positions."""
    held: dict[tuple[int, str], list[int]] = {}
    for item in deferred:
        found = _RECORD_PATH.match(item.payload.get("path", ""))
        if found and item.reason_code == DeferredReason.UNKNOWN_VALUE:
            held.setdefault((int(found[1]), found[2]), []).append(int(found[3]))
    if not held:
        return problems

    def original(match: re.Match[str]) -> str:
        i, kind, j = int(match[1]), match[2], int(match[3])
        for gone in sorted(held.get((i, kind), [])):
            if gone <= j:
                j += 1
        return f"runs[{i}].{kind}[{j}]"

    return [{**p, "path": _RECORD_PATH.sub(original, p["path"])} for p in problems]


def batch_item_now_maps(payload: dict[str, Any]) -> bool:
    """Does this portal's schema now take what was deferred (a newer release learned it)?"""
    kind, record = payload["kind"], payload["record"]
    try:
        if kind in CHILD_MODELS:
            CHILD_MODELS[kind].model_validate(record)
        elif kind == "run_end":
            RunIn.model_validate({"run_id": "x", "agent_id": "x",
                                  "started_at": "2000-01-01T00:00:00Z", **record})
        elif kind == "run":
            RunIn.model_validate(record)
        else:
            BatchIn.model_validate({"runs": [{"run_id": "x", "agent_id": "x",
                                              "started_at": "2000-01-01T00:00:00Z"}], **record})
    except ValidationError:
        return False
    return True
