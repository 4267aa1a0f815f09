from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ledger_portal.admin_base import TenantScopedAdmin
from ledger_portal.roles import Role

from .models import ApprovalRequest


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(TenantScopedAdmin):
    """Approval requests, read-only: decisions are taken in the approver queue (/approvals/)."""
    content_fields = ("arguments",)

    view_role = Role.APPROVE
    list_display = ["id", "kind", "tool", "action_class", "status", "requested_by", "run_id",
                    "approvals_needed", "due_at", "decided_at", "tenant"]
    list_filter = ["status", "kind", "action_class"]
    list_select_related = ["tenant"]
    ordering = ["-id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in self.model._meta.fields]
