"""The rows of the run timeline page, as HTML built in Python.

A 2,000-record run spent 85% of its page time rendering one included template per row
(bench/timeline_page.py); the same markup built here is several times faster. Every text
that comes from the ledger goes through ``escape`` or ``json_to_html``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

from django.utils.safestring import SafeString, mark_safe

from .templatetags.ledger import json_to_html
from .timeline import Entry, Payload


@dataclass
class RollbackControls:
    """What the viewer may roll back on this page (operators only), and what already was."""

    form_url: str
    csrf_token: str
    eligible: set[str] = field(default_factory=set)
    done: dict[str, str] = field(default_factory=dict)  # call_id -> rollback status

    def cell(self, call_id: str) -> str:
        status = self.done.get(call_id)
        if status is not None:
            return (f'<div class="rollback-state status status-{escape(status)}">rollback: '
                    f"{escape(status)}</div>")
        if call_id not in self.eligible:
            return ""
        return (f'<form class="rollback-form" method="post" action="{escape(self.form_url)}">'
                f'<input type="hidden" name="csrfmiddlewaretoken" '
                f'value="{escape(self.csrf_token)}"><input type="hidden" name="call_id" '
                f'value="{escape(call_id)}"><button type="submit" class="rollback-button">'
                "Roll back</button></form>")


def _size(payload: Payload) -> str:
    if payload.hides:
        return ""
    size = payload.size
    return f" ({size} bytes)" if size < 1024 else f" ({size / 1024:.1f} KB)"


def _row(entry: Entry, original: Entry | None, rollbacks: RollbackControls | None = None
         ) -> str:
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
    for decision in entry.decisions:
        policy = (f" · {escape(str(decision['policy']))} v{decision['version']}"
                  if decision.get("policy") else "")
        extra = (f" · approval {decision['approval_id']}" if decision.get("approval_id")
                 else "") + (f" · exception {decision['exception_id']}"
                             if decision.get("exception_id") else "")
        title.append(f'<div class="decision decision-{escape(decision["effect"])}" '
                     f'title="{escape(decision["reason"])}">policy: '
                     f'{escape(decision["effect"])}{policy}{extra}</div>')
    if entry.kind == "model_call" and row.get("input_tokens") is not None:
        title.append(f'<div class="timing">{row["input_tokens"]} → {row["output_tokens"]} '
                     "tokens</div>")
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
        timing = (f'<div class="bar-track" title="{row["started_at"]:%H:%M:%S.%f}{took}">'
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


def timeline_rows(entries: list[Entry], rollbacks: RollbackControls | None = None
                  ) -> SafeString:
    parts = []
    for entry in entries:
        parts.append(_row(entry, None, rollbacks))
        parts.extend(_row(retry, entry, rollbacks) for retry in entry.retries)
    return mark_safe("".join(parts))  # noqa: S308  (built from escaped parts only)
