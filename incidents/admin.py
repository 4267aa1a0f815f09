"""Incidents in the admin: tenant-scoped, with history; changes go through the services (and
so into the ledger); linking, freezing, rolling back and closing live on the incident page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.actors import actor_of
from core.admin_base import ScopedHistoryAdmin, TenantScopedAdmin
from core.roles import Role

from . import services
from .models import Incident


class IncidentForm(forms.ModelForm[Incident]):
    ticket_ids = forms.CharField(required=False, help_text="Comma separated.")

    class Meta:
        model = Incident
        fields = ["tenant", "title", "severity", "summary"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["ticket_ids"] = ", ".join(self.instance.ticket_ids)

    def clean_ticket_ids(self) -> list[str]:
        raw = self.cleaned_data.get("ticket_ids") or ""
        return [t.strip() for t in raw.split(",") if t.strip()]


@admin.register(Incident)
class IncidentAdmin(TenantScopedAdmin, ScopedHistoryAdmin):
    content_fields = ("title", "summary", "ticket_ids")
    view_role = Role.VIEW_LEDGER
    edit_role = Role.OPERATE
    form = IncidentForm
    list_display = ["reference_link", "title", "tenant", "severity", "status",
                    "remediation_status", "opened_at", "closed_at"]
    list_filter = ["status", "severity", "remediation_status", "tenant"]
    list_select_related = ["tenant"]
    search_fields = ["title"]
    actions = ["mark_mitigated"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["tenant", "title", "severity", "summary", "ticket_ids"]
        return ["tenant", "title", "severity", "summary", "ticket_ids", "status",
                "remediation_status", "page", "opened_by_label", "opened_at", "mitigated_at",
                "closed_at", "escalated_call_ids"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        # status and links change through the services (annotated), on the incident page;
        # title, summary and tickets are agent-facing content, shown redacted, edited there too
        return ["tenant", "title", "summary", "ticket_ids", "status", "remediation_status",
                "page", "opened_by_label", "opened_at", "mitigated_at", "closed_at",
                "escalated_call_ids"]

    @admin.display(description="incident")
    def reference_link(self, incident: Incident) -> str:
        return format_html('<a href="{}">{}</a>', reverse(
            "incident-page", args=[incident.tenant.slug, incident.pk]), incident.reference)

    @admin.display(description="incident page")
    def page(self, incident: Incident) -> str:
        return format_html('<a href="{}">timeline, links, freeze, roll back, close</a>',
                           reverse("incident-page", args=[incident.tenant.slug, incident.pk]))

    def save_model(self, request: HttpRequest, obj: Incident, form: Any, change: bool) -> None:
        tickets = form.cleaned_data.get("ticket_ids", [])
        if not change:
            opened = services.open_incident(obj.tenant, obj.title, by=actor_of(request),
                                            severity=obj.severity, summary=obj.summary,
                                            ticket_ids=tickets)
            obj.pk = opened.pk
            return
        # obj holds the redacted presentation of the read-only content: keep what is stored
        stored = Incident.objects.get(pk=obj.pk)
        services.edit_incident(stored, by=actor_of(request), title=stored.title,
                               severity=obj.severity, summary=stored.summary,
                               ticket_ids=stored.ticket_ids)

    @admin.action(description="Mark the selected incidents mitigated", permissions=["change"])
    def mark_mitigated(self, request: HttpRequest, queryset: QuerySet[Incident]) -> None:
        for incident in queryset.select_related("tenant"):
            try:
                services.mark_mitigated(incident, by=actor_of(request))
            except (PermissionDenied, ValidationError) as exc:
                text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{incident.reference}: {text}", messages.ERROR)
            else:
                self.message_user(request, f"{incident.reference} mitigated", messages.SUCCESS)
