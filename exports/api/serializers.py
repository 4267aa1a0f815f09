from __future__ import annotations

from typing import Any

from django.urls import reverse
from rest_framework import serializers

from ..models import AuditExport, ExportFormat, RedactionLevel


class ExportRequestSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField(required=False, help_text="The tenant's slug (people with "
                                   "several tenants; an API key exports its own).")
    window_from = serializers.DateTimeField()
    window_to = serializers.DateTimeField()
    redaction_level = serializers.ChoiceField(choices=RedactionLevel.choices,
                                              default=RedactionLevel.STRICT)
    format = serializers.ChoiceField(choices=ExportFormat.choices, default=ExportFormat.JSONL)
    justification = serializers.CharField(required=False, default="", allow_blank=True)


class AuditExportSerializer(serializers.ModelSerializer[AuditExport]):
    tenant: serializers.SlugRelatedField[Any] = serializers.SlugRelatedField(
        slug_field="slug", read_only=True)
    percent = serializers.IntegerField(read_only=True)
    download = serializers.SerializerMethodField()

    class Meta:
        model = AuditExport
        fields = ["id", "tenant", "window_from", "window_to", "redaction_level", "format",
                  "status", "rows_done", "rows_total", "percent", "counts", "size", "sha256",
                  "error", "requested_by_label", "created_at", "finished_at", "expires_at",
                  "download"]

    def get_download(self, export: AuditExport) -> str | None:
        if export.status != "done":
            return None
        return reverse("api:export-download", args=[export.pk])


class AuditExportDetailSerializer(AuditExportSerializer):
    manifest = serializers.JSONField(read_only=True)
    signature = serializers.CharField(read_only=True)

    class Meta(AuditExportSerializer.Meta):
        fields = [*AuditExportSerializer.Meta.fields, "manifest", "signature"]
