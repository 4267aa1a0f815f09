import django_filters
from django.db.models import QuerySet

from ..models import ActionClass, Run, RunStatus, ToolCall, ToolCallStatus
from ..search import CONTAINS_MIN_LENGTH
from ..services import find_runs, with_trigger_ref

# Runs a ``q`` search may name; the list then pages through them, newest first.
FOUND_MAX = 200


class RunFilter(django_filters.FilterSet):  # type: ignore[misc]  # untyped library
    q = django_filters.CharFilter(
        method="find", label=f"run_id, agent_id or trigger reference: whole, its start, or a "
        f"part of {CONTAINS_MIN_LENGTH}+ characters (ignoring case); at most {FOUND_MAX} runs")
    run_id = django_filters.CharFilter()
    agent_id = django_filters.CharFilter(field_name="agent__agent_id")
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    trigger_ref = django_filters.CharFilter(
        method="started_by", label="trigger reference, whole, as you see it (strictly redacted)")
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields: list[str] = []

    def find(self, queryset: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        found = find_runs(self.request.user, value, limit=FOUND_MAX).runs
        return queryset.filter(pk__in=[run.pk for run in found])

    def started_by(self, queryset: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        return with_trigger_ref(self.request.user, queryset, value)


class ToolCallFilter(django_filters.FilterSet):  # type: ignore[misc]  # untyped library
    tool = django_filters.CharFilter(field_name="tool__name")
    action_class = django_filters.ChoiceFilter(choices=ActionClass.choices)
    status = django_filters.ChoiceFilter(choices=ToolCallStatus.choices)
    run_id = django_filters.CharFilter(field_name="run__run_id")
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = ToolCall
        fields: list[str] = []
