"""``{% lean_result_list cl %}``: Django's ``result_list`` with rows from core.admin_rows."""

from __future__ import annotations

from typing import Any

from django import template

from core.admin_rows import result_list_context

register = template.Library()


@register.inclusion_tag("admin/change_list_results.html")
def lean_result_list(cl: Any) -> dict[str, Any]:
    return result_list_context(cl)
