"""The rows of a big admin list, rendered without Django's per-cell machinery.

Django's ``items_for_result`` looks every column up again for every row: the field by name,
its flattened choices (rebuilt per cell), the change URL (a ``reverse`` per row), the empty
value display, a widget rendered through the form renderer for each action checkbox. For a
page of 100 tool calls that was most of the page's time (#19). Here each column is planned
once per page and each cell is one small function: the same HTML, cell for cell (the tests
compare the two). A column this does not know falls back to Django's rendering of the page.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.admin.templatetags.admin_list import (  # type: ignore[attr-defined]
    _coerce_field_name,
    items_for_result,
    result_headers,
    result_hidden_fields,
)
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.utils import display_for_value, quote
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils import formats, timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

Cell = Callable[[Any], tuple[Any, list[str]]]  # row -> (what to show, extra classes)
_PK = "__lean_pk__"


def _field_cell(field: Any, name: str, empty: str) -> Cell | None:
    """A model field's cell, as ``display_for_field`` shows it; None: not a kind planned."""
    nowrap = ["nowrap"] if isinstance(
        field, models.DateField | models.TimeField | models.ForeignKey) else []
    if isinstance(field, models.ForeignKey):
        def related(row: Any) -> tuple[Any, list[str]]:
            value = getattr(row, field.name)
            return (empty if value is None else value), nowrap
        return related
    if getattr(field, "flatchoices", None):
        try:
            choices = dict(field.flatchoices)
        except TypeError:
            return None

        def choice(row: Any) -> tuple[Any, list[str]]:
            value = getattr(row, field.attname)
            if isinstance(value, str) and value.strip() == "":
                value = ""
            return choices.get(value, empty), nowrap
        return choice
    if isinstance(field, models.BooleanField | models.DecimalField | models.FileField
                  | models.URLField | models.JSONField):
        return None
    empties = field.empty_values

    def plain(row: Any) -> tuple[Any, list[str]]:
        value = getattr(row, field.attname)
        if isinstance(value, str) and value.strip() == "":
            value = ""
        if value in empties:
            return empty, nowrap
        if isinstance(field, models.DateTimeField):
            local = timezone.template_localtime(value)  # type: ignore[attr-defined]
            return formats.localize(local), nowrap
        if isinstance(field, models.DateField | models.TimeField):
            return formats.localize(value), nowrap
        if isinstance(field, models.IntegerField | models.FloatField):
            return formats.number_format(value), nowrap
        return display_for_value(value, empty), nowrap
    return plain


def _method_cell(method: Any, empty: str) -> Cell:
    """A ``list_display`` method of the admin, as Django shows its value."""
    empty = getattr(method, "empty_value_display", empty)
    boolean = getattr(method, "boolean", False)

    def call(row: Any) -> tuple[Any, list[str]]:
        value = method(row)
        if isinstance(value, str) and value.strip() == "":
            value = ""
        shown = display_for_value(value, empty, boolean)
        return shown, ["nowrap"] if isinstance(value, datetime.date | datetime.time) else []
    return call


def _plan(cl: Any) -> list[tuple[str, str, Cell]] | None:
    """(name, base class, cell) per column, or None when one is of a kind not planned."""
    admin = cl.model_admin
    empty = admin.get_empty_value_display()
    plan = []
    for index, name in enumerate(cl.list_display):
        if not isinstance(name, str) or name == "__str__" or "__" in name:
            return None
        try:
            field = cl.lookup_opts.get_field(name)
        except FieldDoesNotExist:
            method = getattr(admin, name, None)
            if not callable(method):
                return None
            css = "action-checkbox" if name == "action_checkbox" else \
                f"field-{_coerce_field_name(name, index)}"
            plan.append((name, css, _method_cell(method, empty)))
            continue
        if (field.auto_created and not field.concrete) or field.many_to_many or (
                field.attname != field.name and not isinstance(field, models.ForeignKey)):
            return None
        cell = _field_cell(field, name, empty)
        if cell is None:
            return None
        plan.append((name, f"field-{_coerce_field_name(name, index)}", cell))
    return plan


def _linked(cl: Any, name: str, first: bool) -> bool:
    if cl.list_display_links is None:
        return False
    if first and not cl.list_display_links:
        return True
    return name in cl.list_display_links


def rows(cl: Any) -> Iterator[list[SafeString]]:
    """Each result's cells, as ``items_for_result`` renders them."""
    plan = None if cl.is_popup or cl.to_field or getattr(cl, "formset", None) else _plan(cl)
    if plan is None:
        for result in cl.result_list:
            yield list(items_for_result(cl, result, None))
        return
    opts = cl.opts
    try:
        change_url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=(_PK,),
                             current_app=cl.model_admin.admin_site.name)
    except NoReverseMatch:
        change_url = ""
    if change_url:
        change_url = add_preserved_filters(
            {"preserved_filters": cl.preserved_filters, "opts": opts}, change_url)
    for result in cl.result_list:
        cells = []
        first = True
        for name, css, cell in plan:
            shown, extra = cell(result)
            row_class = mark_safe(f' class="{" ".join([css, *extra])}"')  # noqa: S308
            if _linked(cl, name, first):
                tag = "th" if first else "td"
                first = False
                content = format_html('<a href="{}">{}</a>', change_url.replace(
                    _PK, str(quote(result.pk))), shown) if change_url else shown
                cells.append(format_html("<{}{}>{}</{}>", tag, row_class, content, tag))
            else:
                cells.append(format_html("<td{}>{}</td>", row_class, shown))
        yield cells


def result_list_context(cl: Any) -> dict[str, Any]:
    """The context Django's ``result_list`` tag gives ``admin/change_list_results.html``."""
    headers = list(result_headers(cl))
    return {"cl": cl, "result_hidden_fields": list(result_hidden_fields(cl)),
            "result_headers": headers,
            "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
            "results": list(rows(cl))}
