"""Template helpers of the ledger pages."""

from __future__ import annotations

from html import escape
from typing import Any

from django import template
from django.utils.safestring import SafeString, mark_safe

from core.actors import Viewer
from runs.redaction import as_text

register = template.Library()


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and "redacted" in value and set(value) <= {
        "redacted", "path", "reason"}


def json_to_html(value: Any) -> str:
    """JSON as nested HTML (every text escaped); a redaction marker becomes a badge naming
    its classification. Plain string building: format_html cost ten times more on a
    2,000-record timeline (bench/timeline_page.py)."""
    if _is_marker(value):
        label = escape(str(value["redacted"]))
        title = escape(f"{value.get('path', '')} ({value.get('reason', '')})")
        return (f'<span class="redacted" data-label="{label}" title="{title}">'
                f"[redacted:{label}]</span>")
    if isinstance(value, dict):
        if not value:
            return "<code>{}</code>"
        items = "".join(f'<li><span class="key">{escape(str(k))}</span>: {json_to_html(v)}</li>'
                        for k, v in value.items())
        return f'<ul class="json">{items}</ul>'
    if isinstance(value, list):
        if not value:
            return "<code>[]</code>"
        items = "".join(f"<li>{json_to_html(v)}</li>" for v in value)
        return f'<ol class="json" start="0">{items}</ol>'
    if isinstance(value, str):
        return f'<span class="str">{escape(value)}</span>'
    if value is None:
        return '<span class="null">null</span>'
    if isinstance(value, bool):
        return f'<span class="num">{"true" if value else "false"}</span>'
    return f'<span class="num">{escape(str(value))}</span>'


@register.filter
def json_html(value: Any) -> SafeString:
    return mark_safe(json_to_html(value))  # noqa: S308  (every text above is escaped)


@register.simple_tag
def integrity_alarms(user: Viewer, limit: int = 5) -> list[Any]:
    """The newest integrity alarms of the tenants whose ledger ``user`` may read."""
    from core.roles import Role
    from runs.models import IntegrityAlarm

    if not getattr(user, "is_authenticated", False):
        return []
    return list(IntegrityAlarm.objects.for_user(user, Role.VIEW_LEDGER)
                .select_related("tenant").order_by("-raised_at", "-id")[:limit])


@register.filter
def redacted_text(value: Any) -> str:
    """A redacted value as text: a marker reads ``[redacted:secret]``, never a dict's repr."""
    return as_text(value)
