"""The login record in the admin: read-only, for superusers and holders of the global
``view_loginevent`` permission (security staff: logins belong to no tenant, so no tenant role
shows them)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .admin_base import EstimatedCountPaginator
from .models import LoginEvent


@admin.register(LoginEvent)
class LoginEventAdmin(admin.ModelAdmin[LoginEvent]):
    list_display = ["at", "outcome", "method", "username", "account", "ip", "reason"]
    list_filter = ["outcome", "method"]
    search_fields = ["username", "ip"]
    date_hierarchy = "at"
    list_select_related = ["account"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        user = request.user
        return bool(user.is_active and (user.is_superuser
                                        or user.has_perm("ledger_portal.view_loginevent")))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
