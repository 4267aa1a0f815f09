"""Template helpers of the ledger pages."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and "redacted" in value and set(value) <= {
        "redacted", "path", "reason"}


@register.filter
def json_html(value: Any) -> SafeString:
    """JSON as nested HTML; a redaction marker becomes a badge naming its classification."""
    if _is_marker(value):
        return format_html('<span class="redacted" data-label="{0}" title="{1} ({2})">'
                           "redacted: {0}</span>", value["redacted"], value.get("path", ""),
                           value.get("reason", ""))
    if isinstance(value, dict):
        if not value:
            return format_html("<code>{{}}</code>")
        items = format_html_join("", "<li><span class=\"key\">{}</span>: {}</li>",
                                 ((k, json_html(v)) for k, v in value.items()))
        return format_html('<ul class="json">{}</ul>', items)
    if isinstance(value, list):
        if not value:
            return format_html("<code>[]</code>")
        items = format_html_join("", "<li>{}</li>", ((json_html(v),) for v in value))
        return format_html('<ol class="json" start="0">{}</ol>', items)
    if isinstance(value, str):
        return format_html('<span class="str">{}</span>', value)
    if value is None:
        return format_html('<span class="null">null</span>')
    return format_html('<span class="num">{}</span>', str(value).lower()
                       if isinstance(value, bool) else value)
