"""The run timeline as the debugging page shows it: chain order, retries grouped under the call
they retry, errors flagged, a waterfall of start and duration, payloads redacted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .api.presenters import decisions_of, timeline_of
from .redaction import as_text, holds_marker

# Above this many bytes of JSON a payload starts collapsed.
LARGE_PAYLOAD = 600
PAYLOADS = {"tool_call": ("input", "output", "error"),
            "model_call": ("messages", "request", "response", "error"),
            "step": ("metadata",), "annotation": ("data",)}
ERROR_STATUSES = {"failed", "error", "denied"}


@dataclass
class Payload:
    name: str
    value: Any
    size: int
    # A payload that hides redacted content does not show its size: it would tell how long
    # the hidden value is. The size still decides whether it starts collapsed.
    hides: bool = False

    @property
    def large(self) -> bool:
        return self.size > LARGE_PAYLOAD


@dataclass
class Entry:
    kind: str
    row: dict[str, Any]
    payloads: list[Payload]
    offset_pct: float = 0.0
    offset_s: float = 0.0
    width_pct: float = 0.0
    retries: list[Entry] = field(default_factory=list)
    decisions: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_error(self) -> bool:
        return self.row.get("status") in ERROR_STATUSES or bool(self.row.get("error"))

    @property
    def title(self) -> str:
        row = self.row
        return {"tool_call": row.get("tool"), "model_call": row.get("model"),
                "step": f"{row.get('index')}. {as_text(row.get('title')) or row.get('step_id')}",
                "annotation": row.get("annotation_kind")}.get(self.kind) or ""

    @property
    def anchor(self) -> str:
        ident = self.row.get("call_id") or self.row.get("step_id") or self.row.get(
            "annotation_id")
        return f"{self.kind}-{ident}"


def _span(run: dict[str, Any], rows: list[dict[str, Any]]) -> tuple[datetime, float]:
    start: datetime = run["started_at"]
    ends = [r["ended_at"] for r in rows if r.get("ended_at")]
    end = max([run.get("ended_at") or start, *ends])
    return start, max((end - start).total_seconds(), 0.001)


def run_totals(run: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Duration, tokens by model and calls by status, from the rows the page loaded anyway (no
    query of its own, so the page's query count stays flat)."""
    tokens: dict[str, dict[str, Any]] = {}
    calls: dict[str, int] = {}
    for row in rows:
        if row["kind"] == "model_call":
            counted = tokens.setdefault(row["model"], {"model": row["model"], "calls": 0,
                                                       "input": 0, "output": 0})
            counted["calls"] += 1
            counted["input"] += row.get("input_tokens") or 0
            counted["output"] += row.get("output_tokens") or 0
        elif row["kind"] == "tool_call":
            calls[row["status"]] = calls.get(row["status"], 0) + 1
    for counted in tokens.values():
        counted["total"] = counted["input"] + counted["output"]
    ended = run.get("ended_at")
    return {"duration_s": (ended - run["started_at"]).total_seconds() if ended else None,
            "tokens": sorted(tokens.values(), key=lambda t: (-t["total"], t["model"])),
            "calls": dict(sorted(calls.items(), key=lambda item: (-item[1], item[0])))}


def build_timeline(run: dict[str, Any], redact: Any) -> dict[str, Any]:
    """Context for the page; ``redact(kind, row) -> row`` applies the viewer's redaction."""
    rows = timeline_of(run["id"], run["tenant_id"])
    call_ids = [r["call_id"] for r in rows if r["kind"] == "tool_call"]
    decisions = decisions_of(run["tenant_id"], call_ids, run_id=run["run_id"])
    recorded = set(call_ids)
    # decided about calls this run never recorded: most often refused before they ran
    unrecorded = [{**decision, "call_id": call_id} for call_id, made in decisions.items()
                  if call_id not in recorded for decision in made]
    start, span = _span(run, rows)
    entries: list[Entry] = []
    calls: dict[str, Entry] = {}
    for raw in rows:
        kind = raw["kind"]
        row = redact(kind, raw)
        payloads = []
        for name in PAYLOADS.get(kind, ()):
            value = row.get(name)
            if value in (None, {}, []):
                continue
            payloads.append(Payload(name, value, len(orjson.dumps(value)), holds_marker(value)))
        entry = Entry(kind, row, payloads, decisions=decisions.get(row.get("call_id") or "", [])
                      if kind == "tool_call" else [])
        began = row.get("started_at")
        if began is not None:
            entry.offset_s = round((began - start).total_seconds(), 3)
            entry.offset_pct = round(100 * entry.offset_s / span, 2)
            if row.get("ended_at"):
                entry.width_pct = max(round(
                    100 * (row["ended_at"] - began).total_seconds() / span, 2), 0.4)
        if kind == "tool_call":
            calls[row["call_id"]] = entry
            original = calls.get(row.get("retry_of") or "")
            if original is not None:
                root = original
                while root.row.get("retry_of") in calls:  # a retry of a retry joins the first
                    root = calls[root.row["retry_of"]]
                root.retries.append(entry)
                continue
        entries.append(entry)
    counts: dict[str, int] = {}
    for raw in rows:
        counts[raw["kind"]] = counts.get(raw["kind"], 0) + 1
    return {"entries": entries, "counts": counts, "span_seconds": round(span, 3),
            "errors": sum(1 for r in rows if r.get("status") in ERROR_STATUSES),
            "totals": run_totals(run, rows),
            "unrecorded_decisions": sorted(unrecorded, key=lambda d: d["id"])}
