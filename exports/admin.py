"""Exports in the admin: request one (the service does the work), follow it, see who
downloaded it."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.actors import actor_of
from core.admin_base import TenantScopedAdmin
from core.roles import Role

from . import services
from .models import AuditExport, ExportDownload


class DownloadInline(admin.TabularInline[ExportDownload, AuditExport]):
    model = ExportDownload
    fields = ["at", "principal", "ip", "user_agent"]
    readonly_fields = ["at", "principal", "ip", "user_agent"]
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ExportRequestAdminForm(forms.ModelForm[AuditExport]):
    class Meta:
        model = AuditExport
        fields = ["tenant", "window_from", "window_to", "redaction_level", "format",
                  "justification"]


@admin.register(AuditExport)
class AuditExportAdmin(TenantScopedAdmin):
    view_role = Role.EXPORT
    edit_role = Role.EXPORT  # requesting; an export never changes once requested
    form = ExportRequestAdminForm
    list_display = ["__str__", "tenant", "redaction_level", "status", "progress", "size",
                    "download", "under_review", "created_at", "expires_at"]
    list_filter = ["status", "redaction_level", "under_review", "tenant"]
    actions = ["mark_under_review", "end_review"]
    list_select_related = ["tenant"]
    ordering = ["-id"]
    inlines = [DownloadInline]

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        if obj is None:
            return []
        return [f.name for f in self.model._meta.fields] + ["progress", "download"]

    def get_fields(self, request: HttpRequest, obj: Model | None = None) -> Any:
        if obj is None:
            return ExportRequestAdminForm.Meta.fields
        return [f.name for f in self.model._meta.fields] + ["progress", "download"]

    def get_inlines(self, request: HttpRequest, obj: Any) -> Any:
        return self.inlines if obj is not None else []

    def _review(self, request: HttpRequest, queryset: Any, under_review: bool) -> None:
        from .review import set_under_review

        for export in queryset:
            try:
                set_under_review(export, by=actor_of(request), under_review=under_review)
            except PermissionDenied as exc:
                self.message_user(request, f"{export}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{export}: "
                                  f"{'under review' if under_review else 'review ended'}")

    @admin.action(description="Under review: hold the window's runs, keep the bundle")
    def mark_under_review(self, request: HttpRequest, queryset: Any) -> None:
        self._review(request, queryset, True)

    @admin.action(description="Review ended")
    def end_review(self, request: HttpRequest, queryset: Any) -> None:
        self._review(request, queryset, False)

    @admin.display(description="progress")
    def progress(self, export: AuditExport) -> str:
        return f"{export.percent}% ({export.rows_done} of {export.rows_total} records)"

    @admin.display(description="bundle")
    def download(self, export: AuditExport) -> str:
        if export.status != "done":
            return ""
        return format_html('<a href="{}">download</a>',
                           reverse("export-download", args=[export.pk]))

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        base = super().get_form(request, obj, change, **kwargs)

        class RequestForm(base):  # type: ignore[valid-type,misc]
            def clean(self) -> Any:
                data = super().clean()
                if self.errors:
                    return data
                try:
                    services.check_request(data["tenant"], data["window_from"],
                                           data["window_to"], by=actor_of(request),
                                           redaction_level=data["redaction_level"],
                                           fmt=data["format"],
                                           justification=data.get("justification", ""))
                except PermissionDenied as exc:
                    raise ValidationError(str(exc)) from exc
                return data
        return RequestForm

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        export = services.request_export(
            data["tenant"], data["window_from"], data["window_to"], by=actor_of(request),
            redaction_level=data["redaction_level"], fmt=data["format"],
            justification=data["justification"])
        obj.pk = export.pk
        obj._state.adding = False
        messages.info(request, f"Export {export.pk} is produced in the background; follow it "
                      "here or on the exports page.")
