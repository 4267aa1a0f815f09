from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from core.admin_base import TenantScopedAdmin
from core.roles import Role

from .models import ApprovalRequest


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(TenantScopedAdmin):
    """Approval requests, read-only: decisions are taken in the approver queue (/approvals/)."""
    content_fields = ("arguments",)
    hash_fields = ("action_hash",)

    view_role = Role.APPROVE
    list_display = ["id", "kind", "tool", "action_class", "status", "requested_by", "run_id",
                    "approvals_needed", "due_at", "decided_at", "used_by", "tenant"]
    list_filter = ["status", "kind", "action_class"]
    list_select_related = ["tenant", "consumed_by"]
    ordering = ["-id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*(f.name for f in self.model._meta.fields if f.name != "consumed_by"),
                "used_by"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_readonly_fields(request, obj)

    @admin.display(description="used by")
    def used_by(self, approval: ApprovalRequest) -> str:
        """The one decision (and call) this approval cleared."""
        decision = approval.consumed_by
        if decision is None:
            return "not used" if approval.status == "approved" else "-"
        return (f"decision {decision.pk} (run {decision.run_id}, call {decision.call_id}) at "
                f"{approval.consumed_at:%Y-%m-%d %H:%M:%S %Z}")
