"""The rows of the run timeline page, as HTML built in Python.

A 2,000-record run spent 85% of its page time rendering one included template per row
(bench/timeline_page.py); the same markup built here is several times faster. Every text
that comes from the ledger goes through ``escape`` or ``json_to_html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from html import escape
from typing import Any

from django.template.defaultfilters import pluralize
from django.utils.safestring import SafeString, mark_safe
from django.utils.timezone import get_current_timezone

from core.dates import shown_time

from .templatetags.ledger import json_to_html
from .timeline import Entry, Payload


@dataclass
class RollbackState:
    """A call's rollback as its row shows it (the hook's answer already redacted)."""

    rollback_id: int
    status: str
    attempts: int
    requested_by: str
    requested_at: datetime
    link: str
    remaining: list[Any] = field(default_factory=list)
    last_error: str = ""

    @property
    def never_attempted(self) -> bool:
        """Stopped before its hook was called (a whole-run rollback that stopped earlier, or a
        watchdog): nothing was tried, so it did not fail, and it may be asked for again."""
        return self.status == "failed" and not self.attempts

    @property
    def label(self) -> str:
        if self.never_attempted:
            return "not attempted"
        return "partial: side effects remain" if self.status == "partial" else self.status


@dataclass
class RollbackControls:
    """What was rolled back on this page's calls (shown to every reader), and what the viewer
    may roll back (``form_url`` set for operators only)."""

    form_url: str | None
    csrf_token: str
    eligible: set[str] = field(default_factory=set)
    done: dict[str, RollbackState] = field(default_factory=dict)

    def _button(self, call_id: str, label: str) -> str:
        return (f'<form class="rollback-form" method="post" action="{escape(self.form_url or "")}">'
                f'<input type="hidden" name="csrfmiddlewaretoken" '
                f'value="{escape(self.csrf_token)}"><input type="hidden" name="call_id" '
                f'value="{escape(call_id)}"><button type="submit" class="rollback-button">'
                f"{label}</button></form>")

    def cell(self, call_id: str) -> str:
        state = self.done.get(call_id)
        may_ask = self.form_url is not None and call_id in self.eligible
        if state is None:
            return self._button(call_id, "Roll back") if may_ask else ""
        css = "not_attempted" if state.never_attempted else state.status
        parts = [f'<div class="rollback-state"><a href="{escape(state.link)}">rollback '
                 f'{state.rollback_id}</a>: <span class="status status-{escape(css)}">'
                 f"{escape(state.label)}</span>"
                 f'<div class="who">asked by {escape(state.requested_by or "the portal")} · '
                 f"{shown_time(state.requested_at)}</div>"]
        if state.never_attempted and state.last_error:
            parts.append(f'<div class="timing">{escape(state.last_error)}</div>')
        if state.remaining:
            items = "".join(f"<li>{json_to_html(item)}</li>" for item in state.remaining)
            parts.append(f'<div class="rollback-remaining">what remains:<ul>{items}</ul></div>')
        parts.append("</div>")
        if may_ask and state.never_attempted:
            parts.append(self._button(call_id, "Roll back (retry)"))
        return "".join(parts)


def _decision(decision: dict[str, Any]) -> str:
    """One decision of the policy trail: effect, the rule that decided, the policy and its
    version, the mode, and the reason as text."""
    rule = f' · rule “{escape(decision["rule"])}”' if decision.get("rule") else ""
    policy = (f" · {escape(str(decision['policy']))} v{decision['version']}"
              if decision.get("policy") else " · no published policy (baseline)")
    extra = (f" · approval {decision['approval_id']}" if decision.get("approval_id")
             else "") + (f" · exception {decision['exception_id']}"
                         if decision.get("exception_id") else "")
    return (f'<div class="decision decision-{escape(decision["effect"])}">policy: '
            f'<strong>{escape(decision["effect"])}</strong>{rule}{policy} · '
            f'{escape(decision.get("mode") or "")}{extra}'
            f'<div class="decision-reason">{escape(decision["reason"])}</div></div>')


def unrecorded_decisions(decisions: list[dict[str, Any]]) -> SafeString:
    """Decisions about calls this run never recorded: the call was refused (or stopped) before
    it ran, so it has no row of its own."""
    items = "".join(f'<li id="decision-{d["id"]}"><code>{escape(d["call_id"] or "(no call id)")}'
                    f'</code> {escape(d.get("tool") or "")} · {shown_time(d["created_at"])}'
                    f"{_decision(d)}</li>" for d in decisions)
    return mark_safe(items)  # noqa: S308  (built from escaped parts only)


def _tokens(row: dict[str, Any]) -> str:
    given, taken = row["input_tokens"] or 0, row["output_tokens"] or 0
    return (f'<div class="timing">{given:,} token{pluralize(given)} in → {taken:,} '
            "out</div>")


def _size(payload: Payload) -> str:
    if payload.hides:
        return ""
    size = payload.size
    return f" ({size} bytes)" if size < 1024 else f" ({size / 1024:.1f} KB)"


def _row(entry: Entry, original: Entry | None, rollbacks: RollbackControls | None,
         zone: tzinfo) -> str:
    row = entry.row
    classes = f"kind-{entry.kind}" + (" error" if entry.is_error else "") + (
        " retry" if original else "")
    kind = entry.kind.replace("_call", "")
    if row.get("action_class"):
        kind += f" · {escape(row['action_class'])}"
    if (row.get("attempt") or 1) > 1:
        kind += f" · attempt {row['attempt']}"
    title = [f'<div class="kind">{kind}</div><strong>{escape(str(entry.title))}</strong>']
    if row.get("call_id"):
        title.append(f'<div class="timing"><code>{escape(row["call_id"])}</code></div>')
    if row.get("tool_call_ref"):
        title.append(f'<div class="timing tool-call-ref">tool call id <code>'
                     f'{escape(row["tool_call_ref"])}</code></div>')
    if original is not None:
        title.append(f'<div class="retries-note">retry of <a href="#{escape(original.anchor)}">'
                     f'{escape(str(row.get("retry_of")))}</a></div>')
    if entry.retries:
        links = ", ".join(f'<a class="retry-link" href="#{escape(r.anchor)}">attempt '
                          f'{r.row.get("attempt")}</a>' for r in entry.retries)
        title.append(f'<div class="retries-note">retried: {links}</div>')
    title.extend(_decision(decision) for decision in entry.decisions)
    if entry.kind == "model_call" and row.get("input_tokens") is not None:
        title.append(_tokens(row))
    if entry.kind == "annotation":
        title.append(f'<div class="who">by {escape(row.get("author_label") or "the agent")} · '
                     f"{shown_time(row.get('recorded_at'), zone)}</div>")
    status = row.get("status")
    status_html = (f'<span class="status status-{escape(status)}">{escape(status)}</span>'
                   if status else "")
    if rollbacks is not None and entry.kind == "tool_call":
        status_html += rollbacks.cell(row["call_id"])
    timing = ""
    if row.get("started_at"):
        ms = row.get("duration_ms")
        if ms is None:
            ms = row.get("latency_ms")
        took = f" · {ms} ms" if ms is not None else ""
        timing = (f'<div class="bar-track" title="{shown_time(row["started_at"], zone)}{took}">'
                  f'<div class="bar" style="left: {entry.offset_pct}%; width: '
                  f'{entry.width_pct}%"></div></div>'
                  f'<div class="timing">+{entry.offset_s:.2f} s{took}</div>')
    details = []
    if entry.kind == "annotation" and row.get("body"):
        details.append(f"<div>{json_to_html(row['body'])}</div>")
    for payload in entry.payloads:
        opened = "" if payload.large else " open"
        details.append(f'<details class="payload payload-{payload.name}"{opened}><summary>'
                       f"{payload.name}{_size(payload)}</summary>"
                       f"{json_to_html(payload.value)}</details>")
    return (f'<tr id="{escape(entry.anchor)}" class="{classes}" data-seq="{row["seq"]}">'
            f'<td>{row["seq"]}</td><td class="title">{"".join(title)}</td>'
            f'<td>{status_html}</td><td class="bar-cell">{timing}</td>'
            f'<td>{"".join(details)}</td></tr>')


@dataclass
class MoreCalls:
    """Where a step's calls the page does not show are: a plain link (a page of their own),
    which the timeline's script loads in place instead (``?fragment=1``)."""

    count: int
    url: str
    step_id: str | None

    def row(self) -> str:
        what = (f"step {escape(self.step_id)}" if self.step_id is not None
                else "no step")
        return (f'<tr class="more-calls"><td></td><td colspan="4">'
                f'<a class="more-calls-link" href="{escape(self.url)}">show {self.count:,} '
                f"more call{pluralize(self.count)} of {what}</a></td></tr>")


def _step_of(entry: Entry) -> str | None:
    return entry.row.get("step_id") if entry.kind != "annotation" else None


def timeline_rows(entries: list[Entry], rollbacks: RollbackControls | None = None,
                  more: dict[str | None, MoreCalls] | None = None) -> SafeString:
    """The rows; ``more``: per step, the link to its calls not shown, after its last row."""
    last = {_step_of(entry): i for i, entry in enumerate(entries)} if more else {}
    after = {i: more[step].row() for step, i in last.items() if more and step in more}
    parts = []
    zone = get_current_timezone()
    for i, entry in enumerate(entries):
        parts.append(_row(entry, None, rollbacks, zone))
        parts.extend(_row(retry, entry, rollbacks, zone) for retry in entry.retries)
        if i in after:
            parts.append(after[i])
    return mark_safe("".join(parts))  # noqa: S308  (built from escaped parts only)
