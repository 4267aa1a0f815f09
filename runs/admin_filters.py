"""The ledger lists' filters: each lists only what the viewer's tenants hold, and each narrows
by an indexed column (no DISTINCT, no count over a big table)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, time, timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from core.roles import Role

from .models import Agent, Tool

__all__ = ["AgentFilter", "RecentFilter", "StartedBetweenFilter", "ToolFilter", "time_bound"]


class RecentFilter(admin.SimpleListFilter):
    """Started within a window; an index range scan, unlike a date hierarchy's DISTINCTs."""

    title = "started"
    parameter_name = "started"
    windows = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7),
               "30d": timedelta(days=30)}

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, f"in the last {key}") for key in self.windows]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        window = self.windows.get(self.value() or "")
        if window is None:
            return queryset
        return queryset.filter(started_at__gte=timezone.now() - window)


class _TenantNamesFilter(admin.SimpleListFilter):
    """The rows of ``model`` in the user's tenants, by name (one small query), never another
    tenant's (Django's related filter would list every tenant's; a DISTINCT over the records
    would read them all). An id of another tenant named in the URL finds nothing: the list is
    scoped already."""

    model: Any
    name_field: str
    filtered_field: str

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        rows = self.model.objects.for_user(request.user, Role.VIEW_LEDGER).values_list(
            "pk", "tenant__slug", self.name_field).order_by(self.name_field, "tenant__slug")
        return [(str(pk), f"{name} ({slug})") for pk, slug, name in rows]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.filtered_field: value}) if value and value.isdigit() \
            else queryset


class ToolFilter(_TenantNamesFilter):
    title, parameter_name = "tool", "tool"
    model, name_field, filtered_field = Tool, "name", "tool_id"


class AgentFilter(_TenantNamesFilter):
    title, parameter_name = "agent", "agent"
    model, name_field, filtered_field = Agent, "agent_id", "agent_id"


DATE_FORMATS = "YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"


def time_bound(text: str, *, end: bool = False) -> tuple[datetime, bool]:
    """``text`` as a moment, and whether it is a whole day's end (exclusive). A date is the
    start of that day (``end``: of the next one, so 'to' includes the day it names); a naive
    time is in the portal's time zone. ``ValueError`` names what is wrong."""
    try:  # a date first: fromisoformat would read one as a midnight
        day = parse_date(text)
        moment = None if day is not None else parse_datetime(text)
    except ValueError:  # well formed, impossible: 2026-02-30
        moment = day = None
    if moment is None and day is None:
        raise ValueError(f"{text!r} is not a date or time: use {DATE_FORMATS}")
    if moment is None:
        assert day is not None
        moment = datetime.combine(day + timedelta(days=1 if end else 0), time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment, day is not None and end


class StartedBetweenFilter(admin.ListFilter):
    """From and to on ``started_at`` (two GET parameters, either may be left out): a range
    scan of the tenant's started index. A value that is not a date is named in a message and
    not applied, instead of Django's bare ``?e=1`` error page."""

    title = "started between"
    template = "admin/started_between_filter.html"
    parameters = ("started_from", "started_to")

    def __init__(self, request: HttpRequest, params: dict[str, list[str]], model: Any,
                 model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        self.bounds: dict[str, tuple[datetime, bool]] = {}
        for name in self.parameters:
            if name not in params:
                continue
            value = self.used_parameters[name] = params.pop(name)[-1].strip()
            if not value:
                continue
            try:
                self.bounds[name] = time_bound(value, end=name == "started_to")
            except ValueError as exc:
                messages.error(request, f"{name.replace('_', ' ')}: {exc}; not applied.")

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str | None]:
        return list(self.parameters)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if "started_from" in self.bounds:
            queryset = queryset.filter(started_at__gte=self.bounds["started_from"][0])
        if "started_to" in self.bounds:
            moment, day_end = self.bounds["started_to"]
            queryset = queryset.filter(**{"started_at__lt" if day_end else "started_at__lte":
                                          moment})
        return queryset

    def choices(self, changelist: Any) -> Iterator[dict[str, Any]]:
        """One 'choice': the form, carrying the list's other parameters along."""
        kept = [(key, value) for key, values in self.request.GET.lists()
                if key not in self.parameters and key != "p" for value in values]
        yield {"kept": kept, "started_from": self.used_parameters.get("started_from", ""),
               "started_to": self.used_parameters.get("started_to", ""),
               "clear": changelist.get_query_string(remove=list(self.parameters)),
               "active": any(self.used_parameters.values()), "formats": DATE_FORMATS}
