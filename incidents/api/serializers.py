"""Request and response shapes of the incident API (the OpenAPI schema documents these)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from ..models import CLOSING_REMEDIATIONS, IncidentStatus, Remediation, Severity


class IncidentSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    reference = serializers.CharField(help_text="How annotations name it (incident-<id>).")
    tenant = serializers.SlugField()
    title = serializers.CharField()
    severity = serializers.ChoiceField(choices=Severity.choices)
    status = serializers.ChoiceField(choices=IncidentStatus.choices)
    remediation_status = serializers.ChoiceField(choices=Remediation.choices)
    ticket_ids = serializers.ListField(child=serializers.CharField())
    opened_by = serializers.CharField()
    opened_at = serializers.DateTimeField()
    mitigated_at = serializers.DateTimeField(allow_null=True)
    closed_at = serializers.DateTimeField(allow_null=True)


class LinkedCallSerializer(serializers.Serializer[Any]):
    call_id = serializers.CharField()
    tool = serializers.CharField()
    action_class = serializers.CharField()
    run_id = serializers.CharField()


class LinkedVersionSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    policy = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    freeze = serializers.BooleanField(help_text="A tool freeze published for this incident.")


class LinkedRollbackSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    call_id = serializers.CharField()
    status = serializers.CharField()


class IncidentTimelineEntrySerializer(serializers.Serializer[Any]):
    annotation_id = serializers.CharField()
    kind = serializers.CharField()
    event = serializers.CharField()
    body = serializers.JSONField(help_text="Redacted for the reader like any annotation.")
    data = serializers.JSONField()  # type: ignore[assignment]  # a field named data
    run_id = serializers.CharField()
    target_call_id = serializers.CharField()
    author = serializers.CharField()
    recorded_at = serializers.DateTimeField()


class IncidentDetailSerializer(IncidentSerializer):
    summary = serializers.CharField()
    runs = serializers.ListField(child=serializers.CharField())
    tool_calls = LinkedCallSerializer(many=True)
    policy_versions = LinkedVersionSerializer(many=True)
    rollbacks = LinkedRollbackSerializer(many=True)
    escalated_calls = serializers.ListField(child=serializers.CharField())
    last_escalated_at = serializers.DateTimeField(allow_null=True)
    timeline = IncidentTimelineEntrySerializer(many=True)
    redaction = serializers.CharField()


class IncidentOpenSerializer(serializers.Serializer[Any]):
    title = serializers.CharField(max_length=300)
    severity = serializers.ChoiceField(choices=Severity.choices, default=Severity.MEDIUM)
    summary = serializers.CharField(required=False, default="", allow_blank=True)
    ticket_ids = serializers.ListField(child=serializers.CharField(max_length=200),
                                       required=False, default=list)


class IncidentLinkSerializer(serializers.Serializer[Any]):
    run_ids = serializers.ListField(child=serializers.CharField(max_length=200),
                                    required=False, default=list)
    call_ids = serializers.ListField(child=serializers.CharField(max_length=200),
                                     required=False, default=list)
    policy_version_ids = serializers.ListField(child=serializers.IntegerField(),
                                               required=False, default=list)
    replay_ids = serializers.ListField(child=serializers.IntegerField(), required=False,
                                       default=list)
    ticket_ids = serializers.ListField(child=serializers.CharField(max_length=200),
                                       required=False, default=list)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not any(attrs.values()):
            raise serializers.ValidationError("name at least one run, call, policy version, "
                                              "replay or ticket to link")
        return attrs


class LinkedSerializer(serializers.Serializer[Any]):
    runs = serializers.ListField(child=serializers.CharField())
    calls = serializers.ListField(child=serializers.CharField())
    policy_versions = serializers.ListField(child=serializers.IntegerField())
    replays = serializers.ListField(child=serializers.IntegerField())
    tickets = serializers.ListField(child=serializers.CharField())
    escalated_calls = serializers.ListField(child=serializers.CharField())


class IncidentNoteSerializer(serializers.Serializer[Any]):
    body = serializers.CharField()


class IncidentFreezeSerializer(serializers.Serializer[Any]):
    tool = serializers.CharField(max_length=200)
    mode = serializers.ChoiceField(choices=["deny", "sandbox"], default="deny")


class IncidentCloseSerializer(serializers.Serializer[Any]):
    remediation_status = serializers.ChoiceField(
        choices=Remediation.choices,
        help_text="Required: how the incident ends, one of "
        + ", ".join(CLOSING_REMEDIATIONS) + ".")
    note = serializers.CharField(required=False, default="", allow_blank=True)


class IncidentMitigateSerializer(serializers.Serializer[Any]):
    note = serializers.CharField(required=False, default="", allow_blank=True)
