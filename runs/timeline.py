"""The run timeline as the debugging page shows it: chain order, retries grouped under the call
they retry, errors flagged, a waterfall of start and duration, payloads redacted."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from .api.presenters import decisions_of, record_parts, renamed, timeline_of, values_of
from .redaction import as_text, holds_marker

# Above this many bytes of JSON a payload starts collapsed.
LARGE_PAYLOAD = 600
#: A run of more records than this is "long": its page shows every step with its first calls
#: (a 10,000-call run made a 15 MB page), the rest of a step's calls load on demand.
LONG_RUN_RECORDS = 2000
#: On a long run's page, a step shows at most this many tool calls and as many model calls.
CALLS_SHOWN_PER_STEP = 5
#: Calls of a step loaded at a time (its "more" link), and the steps and annotations a long
#: run's page lists at most (the records cursor of the API has them all): a long run's page
#: has at most STEPS_SHOWN * (1 + 2 * CALLS_SHOWN_PER_STEP) + ANNOTATIONS_SHOWN rows (and
#: the first calls outside any step), 2,400 whatever the run's length.
CALLS_PER_FRAGMENT = 500
STEPS_SHOWN = 200
ANNOTATIONS_SHOWN = 200
CALL_KINDS = ("model_call", "tool_call")
PAYLOADS = {"tool_call": ("input", "output", "error"),
            "model_call": ("messages", "request", "response", "error"),
            "step": ("metadata",), "annotation": ("data",)}
ERROR_STATUSES = {"failed", "error", "denied"}
_TITLE_FIELDS = {"tool_call": "tool", "model_call": "model", "annotation": "annotation_kind"}


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
        row, kind = self.row, self.kind
        if kind == "step":  # only a step's title is built (it is content: redacted)
            return f"{row.get('index')}. {as_text(row.get('title')) or row.get('step_id')}"
        return row.get(_TITLE_FIELDS.get(kind, "")) or ""

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


def build_timeline(run: dict[str, Any], redact: Any, shown: ShownPart | None = None
                   ) -> dict[str, Any]:
    """Context for the page; ``redact(kind, row) -> row`` applies the viewer's redaction.
    ``shown``: part of the run (a long run's first calls per step, or a step's next calls)
    with the run's totals counted by the database; by default every record."""
    rows = timeline_of(run["id"], run["tenant_id"]) if shown is None else shown.rows
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
            dumped = orjson.dumps(value)
            # a marker is a dict with a "redacted" key, or "[redacted:" inside a string: the
            # walk is needed only when its JSON holds one of the two
            hides = (b'"redacted"' in dumped or b"[redacted:" in dumped) and holds_marker(value)
            payloads.append(Payload(name, value, len(dumped), hides))
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
    if shown is not None:
        return {"entries": entries, "counts": shown.counts, "span_seconds": round(span, 3),
                "errors": shown.errors, "totals": shown.totals,
                "unrecorded_decisions": sorted(unrecorded, key=lambda d: d["id"])}
    counts: dict[str, int] = {}
    for raw in rows:
        counts[raw["kind"]] = counts.get(raw["kind"], 0) + 1
    return {"entries": entries, "counts": counts, "span_seconds": round(span, 3),
            "errors": sum(1 for r in rows if r.get("status") in ERROR_STATUSES),
            "totals": run_totals(run, rows),
            "unrecorded_decisions": sorted(unrecorded, key=lambda d: d["id"])}


# -- long runs ---------------------------------------------------------------------------------


@dataclass
class ShownPart:
    """The records a page shows of a run, and what it does not show: per step (its external
    ``step_id``, None for calls outside any step) how many calls remain and after which
    ``seq`` they start. The counts and totals are the whole run's, counted by the database."""

    rows: list[dict[str, Any]]
    hidden: dict[str | None, tuple[int, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    totals: dict[str, Any] = field(default_factory=dict)
    steps_left_out: int = 0
    annotations_left_out: int = 0


def is_long(run: dict[str, Any]) -> bool:
    return bool(run["last_seq"] > LONG_RUN_RECORDS)


def _step_key(row: dict[str, Any]) -> str | None:
    return row.get("step_id")


def first_calls_per_step(run: dict[str, Any]) -> ShownPart:
    """A long run as its page shows it: every step (up to ``STEPS_SHOWN``) and annotation (up
    to ``ANNOTATIONS_SHOWN``), and per step its calls up to the ``CALLS_SHOWN_PER_STEP``-th
    tool call or model call, whichever comes first. Each query reads a bounded number of rows
    (a window function ranks the calls within their step), whatever the run's length."""
    from django.db.models import Count, F, Q, Sum, Window
    from django.db.models.functions import RowNumber

    run_pk, tenant_id = run["id"], run["tenant_id"]
    rows: list[dict[str, Any]] = []
    cutoff: dict[str | None, int] = {}  # the last seq shown of a step that has more
    per_kind: dict[str, list[dict[str, Any]]] = {}
    caps = {"step": STEPS_SHOWN, "annotation": ANNOTATIONS_SHOWN}
    steps = record_parts()[0][1].objects.filter(run_id=run_pk, tenant_id=tenant_id)
    listed_steps = Q(step__isnull=True) | Q(step__in=steps.order_by("seq").values("id")[
        :STEPS_SHOWN])
    for kind, model, fields in record_parts():
        qs = model.objects.filter(run_id=run_pk, tenant_id=tenant_id)
        if kind in CALL_KINDS:
            qs = qs.filter(listed_steps)  # the calls of the steps listed, not of later ones
            ranked = values_of(qs.annotate(rank_in_step=Window(
                RowNumber(), partition_by=[F("step_id")], order_by=F("seq").asc())).filter(
                rank_in_step__lte=CALLS_SHOWN_PER_STEP), fields, "rank_in_step")
            found = renamed(ranked)
            for row in found:
                if row.pop("rank_in_step") == CALLS_SHOWN_PER_STEP:
                    key = _step_key(row)
                    cutoff[key] = min(cutoff.get(key, row["seq"]), row["seq"])
        else:
            found = renamed(values_of(qs, fields).order_by("seq")[:caps[kind]])
        per_kind[kind] = found
    for kind, found in per_kind.items():
        for row in found:
            if kind in CALL_KINDS and row["seq"] > cutoff.get(_step_key(row), row["seq"]):
                continue
            row["kind"] = kind
            rows.append(row)
    rows.sort(key=lambda row: row["seq"])
    shown_per_step: dict[str | None, int] = {}
    for row in rows:
        if row["kind"] in CALL_KINDS:
            shown_per_step[_step_key(row)] = shown_per_step.get(_step_key(row), 0) + 1
    part = ShownPart(rows)
    totals_per_step: dict[str | None, int] = {}
    statuses: dict[str, int] = {}
    tokens: list[dict[str, Any]] = []
    for kind, model, _ in record_parts():
        qs = model.objects.filter(run_id=run_pk, tenant_id=tenant_id)
        if kind == "tool_call":
            for status, n in qs.values_list("status").annotate(n=Count("id")).order_by():
                statuses[status] = n
        if kind == "model_call":
            tokens = [{"model": m, "calls": n, "input": i or 0, "output": o or 0,
                       "total": (i or 0) + (o or 0)} for m, n, i, o in qs.values_list(
                "model").annotate(Count("id"), Sum("input_tokens"), Sum("output_tokens")
                                  ).order_by()]
        if kind in CALL_KINDS:
            part.counts[kind] = 0
            for step_id, n in qs.values_list("step__step_id").annotate(n=Count("id")
                                                                       ).order_by():
                totals_per_step[step_id] = totals_per_step.get(step_id, 0) + n
                part.counts[kind] += n
        else:
            part.counts[kind] = len(per_kind[kind])
            if len(per_kind[kind]) == caps[kind]:  # perhaps more: count them
                part.counts[kind] = qs.count()
    part.steps_left_out = part.counts.get("step", 0) - len(per_kind["step"])
    part.annotations_left_out = part.counts.get("annotation", 0) - len(per_kind["annotation"])
    part.hidden = {key: (total - shown_per_step.get(key, 0), cutoff[key])
                   for key, total in totals_per_step.items()
                   if key in cutoff and total > shown_per_step.get(key, 0)}
    part.errors = sum(n for status, n in statuses.items() if status in ERROR_STATUSES) + sum(
        1 for row in per_kind["step"] if row.get("status") in ERROR_STATUSES)
    ended = run.get("ended_at")
    part.totals = {
        "duration_s": (ended - run["started_at"]).total_seconds() if ended else None,
        "tokens": sorted(tokens, key=lambda t: (-t["total"], t["model"])),
        "calls": dict(sorted(statuses.items(), key=lambda item: (-item[1], item[0])))}
    return part


def calls_of_step(run: dict[str, Any], step_id: str | None, after: int) -> ShownPart:
    """The calls of one step (None: calls outside any step) after ``seq`` ``after``, at most
    ``CALLS_PER_FRAGMENT``; ``hidden`` says how many remain beyond them."""
    from django.db.models import Q

    in_step = Q(step__isnull=True) if step_id is None else Q(step__step_id=step_id)
    rows: list[dict[str, Any]] = []
    remaining = 0
    for kind, model, fields in record_parts():
        if kind not in CALL_KINDS:
            continue
        qs = model.objects.filter(in_step, run_id=run["id"], tenant_id=run["tenant_id"],
                                  seq__gt=after)
        remaining += qs.count()
        for row in renamed(values_of(qs, fields).order_by("seq")[:CALLS_PER_FRAGMENT]):
            row["kind"] = kind
            rows.append(row)
    rows.sort(key=lambda row: row["seq"])
    rows = rows[:CALLS_PER_FRAGMENT]
    part = ShownPart(rows)
    if remaining > len(rows):
        part.hidden[step_id] = (remaining - len(rows), rows[-1]["seq"])
    return part
