import django_filters

from ..models import ActionClass, Run, RunStatus, ToolCall, ToolCallStatus


class RunFilter(django_filters.FilterSet):
    run_id = django_filters.CharFilter()
    agent_id = django_filters.CharFilter(field_name="agent__agent_id")
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    trigger_ref = django_filters.CharFilter()
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = Run
        fields: list[str] = []


class ToolCallFilter(django_filters.FilterSet):
    tool = django_filters.CharFilter(field_name="tool__name")
    action_class = django_filters.ChoiceFilter(choices=ActionClass.choices)
    status = django_filters.ChoiceFilter(choices=ToolCallStatus.choices)
    run_id = django_filters.CharFilter(field_name="run__run_id")
    started_after = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="gte")
    started_before = django_filters.IsoDateTimeFilter(field_name="started_at", lookup_expr="lt")

    class Meta:
        model = ToolCall
        fields: list[str] = []
