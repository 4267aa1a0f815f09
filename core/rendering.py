"""Pages whose bulk is one block of HTML built in Python (the rows of a run's timeline).

Django's template engine copies its output at every level of nesting (each block, the
``extends`` chain and the include join their children's strings, and marks the result safe,
another copy): a 2.7 MB block of rows was copied a dozen times, a tenth of the 2,000-record
timeline page (bench/timeline_page.py). Here the template renders around a placeholder and the
block is joined in once, as bytes.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

_PLACEHOLDER = mark_safe("<!--ledger-rendering:slot-->")


def render_around(request: HttpRequest, template: str, context: dict[str, Any], slot: str
                  ) -> HttpResponse:
    """``render(request, template, context)``, with ``context[slot]`` (safe HTML) joined into
    the rendered page once instead of being copied through every level of the template."""
    block = str(conditional_escape(context[slot]))  # escaped unless already safe HTML
    page = render_to_string(template, {**context, slot: _PLACEHOLDER}, request)
    head, found, tail = page.partition(_PLACEHOLDER)
    if not found or _PLACEHOLDER in tail:
        # every text from the ledger is escaped, so the placeholder can only come from the
        # template; should it not be there exactly once, render the plain way
        page = render_to_string(template, context, request)
        return HttpResponse(page)
    return HttpResponse(b"".join((head.encode(), block.encode(), tail.encode())))
