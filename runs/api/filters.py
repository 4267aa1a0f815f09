import django_filters
from django.db.models import Q, QuerySet

from ..models import ActionClass, Run, RunStatus, ToolCall, ToolCallStatus


class RunFilter(django_filters.FilterSet):  # type: ignore[misc]  # untyped library
    q = django_filters.CharFilter(method="find", label="run_id, agent_id or trigger reference")
    run_id = django_filters.CharFilter()
    agent_id = django_filters.CharFilter(field_name="agent__agent_id")
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    trigger_ref = django_filters.CharFilter()
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields: list[str] = []

    def find(self, queryset: QuerySet[Run], name: str, value: str) -> QuerySet[Run]:
        value = value.strip()
        return queryset.filter(Q(run_id=value) | Q(trigger_ref=value) |
                               Q(agent__agent_id=value))


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
