from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.admin_base import TenantScopedAdmin
from core.roles import Role
from runs.admin import GovernanceAdmin

from .models import ApprovalRequest, ApprovalRoute, NotificationDelivery


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(TenantScopedAdmin):
    """Approval requests, read-only: decisions are taken in the approver queue (/approvals/)."""
    content_fields = ("arguments",)
    hash_fields = ("action_hash",)

    view_role = Role.APPROVE
    list_display = ["id", "kind", "tool", "action_class", "status", "requested_by", "run_id",
                    "approvals_needed", "due_at", "decided_at", "used_by", "in_queue", "tenant"]
    list_filter = ["status", "kind", "action_class"]
    list_select_related = ["tenant", "consumed_by"]
    ordering = ["-id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*(f.name for f in self.model._meta.fields if f.name != "consumed_by"),
                "used_by"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_readonly_fields(request, obj)

    @admin.display(description="queue")
    def in_queue(self, approval: ApprovalRequest) -> str:
        """Where a pending request is decided: its card in the approval queue."""
        if approval.status != "pending":
            return "-"
        return format_html('<a href="{}#request-{}">decide in the queue</a>',
                           reverse("approval-queue"), approval.pk)

    @admin.display(description="used by")
    def used_by(self, approval: ApprovalRequest) -> str:
        """The one decision (and call) this approval cleared."""
        decision = approval.consumed_by
        if decision is None:
            return "not used" if approval.status == "approved" else "-"
        return (f"decision {decision.pk} (run {decision.run_id}, call {decision.call_id}) at "
                f"{approval.consumed_at:%Y-%m-%d %H:%M:%S %Z}")


@admin.register(ApprovalRoute)
class ApprovalRouteAdmin(GovernanceAdmin):
    """Where a tenant's approvers hear of requests. Secrets are references (env:NAME) resolved
    in the tenant's namespace when a message is sent: nothing secret is stored or shown."""

    list_display = ["name", "channel", "tenant", "classes", "event_list", "enabled"]
    list_filter = ["channel", "enabled"]
    search_fields = ["name"]
    fields = ["tenant", "name", "channel", "action_classes", "events", "target", "secret_ref",
              "enabled"]

    @admin.display(description="action classes")
    def classes(self, route: ApprovalRoute) -> str:
        return ", ".join(route.action_classes) or "all"

    @admin.display(description="events")
    def event_list(self, route: ApprovalRoute) -> str:
        return ", ".join(route.events)


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(TenantScopedAdmin):
    """Every attempt to tell approvers about a request, read-only: what went where, and
    whether it arrived."""

    view_role = Role.APPROVE
    list_display = ["created_at", "request", "event", "channel", "route", "delivered", "detail",
                    "tenant"]
    list_filter = ["event", "channel", "delivered"]
    list_select_related = ["tenant", "route", "request"]
    ordering = ["-id"]
