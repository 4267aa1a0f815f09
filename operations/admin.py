"""Operations admin: replays and rollbacks (read-only job rows), the tool registry's
connection settings (changes confirmed by a second manager), freezes, and rolling back tool
calls from the ledger's tool-call list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from core.actors import actor_of
from core.admin_base import TenantScopedAdmin
from core.roles import Role
from core.tenancy import has_role
from runs import admin as ledger_admin
from runs.admin import GovernanceAdmin
from runs.models import Tool, ToolCall, ToolChange

from .models import Replay, Rollback

# The ledger's tool-call list, with the operation operators run from it: the ledger app does
# not know about rollbacks, so this app adds the action to its admin.
admin.site.unregister(ToolCall)


@admin.register(ToolCall)
class ToolCallAdmin(ledger_admin.ToolCallAdmin):
    actions = ["roll_back"]

    def get_actions(self, request: HttpRequest) -> Any:
        # Ledger rows are read-only here, so the action is offered by role, not by "change".
        actions = super().get_actions(request)
        roles = self._roles(request)  # loaded once per request (None: a superuser)
        if roles is not None and not roles.get(Role.OPERATE):
            actions.pop("roll_back", None)
        return actions

    @admin.action(description="Roll back the selected calls (compensate hook, once each)")
    def roll_back(self, request: HttpRequest, queryset: QuerySet[ToolCall]) -> None:
        from django.core.exceptions import PermissionDenied, ValidationError

        from .rollback import request_rollback

        for call in queryset.select_related("tool", "tenant")[:100]:
            try:
                rollback, queued = request_rollback(call, by=actor_of(request))
            except (PermissionDenied, ValidationError) as exc:
                text = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{call.call_id}: {text}", messages.ERROR)
                continue
            self.message_user(request, f"{call.call_id}: rollback {rollback.pk} queued"
                              if queued else f"{call.call_id}: already rolled back (rollback "
                              f"{rollback.pk}, {rollback.status})",
                              messages.SUCCESS if queued else messages.WARNING)


@admin.register(Rollback)
class RollbackAdmin(TenantScopedAdmin):
    """Rollbacks: read-only job rows (status, attempts, outcome, what remains)."""
    content_fields = ("outcome", "attempt_log", "remaining_side_effects", "last_error")

    list_display = ["id", "call", "tenant", "status", "attempts", "incident", "requested_by_label",
                    "created_at", "finished_at", "timeline"]
    list_filter = ["status"]
    list_select_related = ["tenant", "tool_call__tool", "incident", "run"]
    raw_id_fields = ["tool_call", "run", "incident"]
    ordering = ["-id"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="timeline")
    def timeline(self, rollback: Rollback) -> str:
        from runs.links import timeline_url

        url = timeline_url(rollback.tenant.slug, rollback.run.run_id)
        return format_html('<a href="{}#tool_call-{}">the call on its timeline</a>', url,
                           rollback.tool_call.call_id) if url else "-"

    @admin.display(description="tool call")
    def call(self, rollback: Rollback) -> str:
        return f"{rollback.tool_call.tool.name} {rollback.tool_call.call_id}"


@admin.register(Tool)
class ToolAdmin(GovernanceAdmin):
    list_display = ["name", "action_class", "connector", "dry_run_via", "supports_rollback",
                    "supports_idempotency", "tenant", "updated_at"]
    list_filter = ["action_class", "connector", "tenant"]
    search_fields = ["name"]
    fieldsets = [
        (None, {"fields": ["tenant", "name", "action_class", "description"]}),
        ("Connector", {"fields": ["connector", "endpoint", "stdio_server", "remote_name",
                                  "timeout_ms", "secret_ref", "pending_connection"],
                       "description": "How the portal reaches the tool for replays and "
                       "rollbacks. An MCP tool is reached at its endpoint URL or on a stdio "
                       "server the platform operator allows (the list offered; commands are "
                       "never typed here). The secret reference names where the credential "
                       "lives (env:NAME, looked up in this tenant's namespace); the credential "
                       "itself is never stored here. A change of the connector, the endpoint, "
                       "the stdio server, the compensate endpoint or the secret reference is "
                       "only proposed: it takes effect once another manager confirms it (Tool "
                       "connection changes)."}),
        ("Dry run, compensation, idempotency", {"fields": [
            "dry_run_via", "dry_run_name", "dry_run_concurrency", "supports_rollback",
            "compensate_endpoint", "supports_idempotency"]}),
        ("Comparison", {"fields": ["volatile_fields"]}),
    ]
    actions = ["freeze", "freeze_to_sandbox", "unfreeze"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*super().get_readonly_fields(request, obj), "pending_connection"]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "stdio_server":
            from django import forms

            from core.mcp_stdio import allowed_stdio_commands

            # Read per request: the allowlist is the operator's, and may change.
            choices = [("", "none (reach the MCP server at the endpoint URL)")] + [
                (name, name) for name in sorted(allowed_stdio_commands())]
            return forms.ChoiceField(
                choices=choices, required=False, label=db_field.verbose_name,
                help_text=db_field.help_text, validators=db_field.validators)
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="pending connection change")
    def pending_connection(self, tool: Tool) -> str:
        change = tool.changes.filter(status="pending").first() if tool.pk else None
        if change is None:
            return "none"
        return format_html('<a href="{}">{}</a> by {}', reverse(
            "admin:runs_toolchange_change", args=[change.pk]), ", ".join(
            f"{field}={value!r}" for field, value in sorted(change.proposed.items())),
            change.proposed_by)

    def save_model(self, request: HttpRequest, obj: Tool, form: Any, change: bool) -> None:
        """Saves what is not governed; the connection fields become a proposal that another
        manager confirms (also on the add page and on a history revert)."""
        from django.db import transaction

        from .tool_changes import keep_confirmed, propose_tool_change

        with transaction.atomic():
            proposed = keep_confirmed(obj)
            super().save_model(request, obj, form, change)
            pending = propose_tool_change(obj, proposed, by=actor_of(request))
        if pending is not None:
            self.message_user(request, f"{obj}: the connection change waits for another "
                              "manager to confirm it (Tool connection changes); until then "
                              "the tool keeps its current connection.", messages.WARNING)

    def _freeze(self, request: HttpRequest, queryset: QuerySet[Tool], mode: str | None) -> None:
        from django.core.exceptions import ValidationError

        from policies.services import freeze_tool, unfreeze_tool

        for tool in queryset.select_related("tenant"):
            if not has_role(request.user, Role.OPERATE, tool.tenant_id):
                self.message_user(request, f"{tool}: freezing needs the operate role",
                                  messages.ERROR)
                continue
            try:
                if mode is None:
                    unfreeze_tool(tool.tenant, tool.name, by=actor_of(request))
                else:
                    freeze_tool(tool.tenant, tool.name, by=actor_of(request), mode=mode)
            except ValidationError as exc:
                self.message_user(request, f"{tool}: {' '.join(exc.messages)}", messages.ERROR)
            else:
                done = "unfrozen" if mode is None else f"frozen ({mode})"
                self.message_user(request, f"{tool} {done} in {tool.tenant.slug}",
                                  messages.SUCCESS)

    @admin.action(description="Freeze: deny every call of the selected tools")
    def freeze(self, request: HttpRequest, queryset: QuerySet[Tool]) -> None:
        self._freeze(request, queryset, "deny")

    @admin.action(description="Freeze to sandbox: the selected tools run only in sandbox")
    def freeze_to_sandbox(self, request: HttpRequest, queryset: QuerySet[Tool]) -> None:
        self._freeze(request, queryset, "sandbox")

    @admin.action(description="Unfreeze the selected tools")
    def unfreeze(self, request: HttpRequest, queryset: QuerySet[Tool]) -> None:
        self._freeze(request, queryset, None)


@admin.register(ToolChange)
class ToolChangeAdmin(TenantScopedAdmin):
    """Proposed tool connection changes; another manager confirms or rejects them."""

    view_role = Role.MANAGE_POLICIES
    edit_role = Role.MANAGE_POLICIES
    list_display = ["tool", "status", "proposed", "proposed_by", "proposed_at", "decided_by",
                    "tenant"]
    list_filter = ["status", "tenant"]
    list_select_related = ["tool", "tenant", "proposed_by", "decided_by"]
    fields = readonly_fields = ("tenant", "tool", "status", "proposed", "previous",
                                "proposed_by", "proposed_at", "decided_by", "decided_at")
    actions = ["confirm", "reject"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False  # proposed on the tool's own page

    def _each(self, request: HttpRequest, queryset: QuerySet[ToolChange], operation: Any,
              done: str) -> None:
        from django.core.exceptions import PermissionDenied, ValidationError

        for change in queryset.select_related("tool"):
            try:
                operation(change, by=request.user)
            except (ValidationError, PermissionDenied) as error:
                text = " ".join(error.messages) if isinstance(error, ValidationError) else str(
                    error)
                self.message_user(request, f"{change}: {text}", messages.ERROR)
            else:
                self.message_user(request, f"{change.tool}: connection change {change.pk} "
                                  f"{done}", messages.SUCCESS)

    @admin.action(description="Confirm the selected connection changes", permissions=["change"])
    def confirm(self, request: HttpRequest, queryset: QuerySet[ToolChange]) -> None:
        from .tool_changes import confirm_tool_change

        self._each(request, queryset, confirm_tool_change, "confirmed")

    @admin.action(description="Reject the selected connection changes", permissions=["change"])
    def reject(self, request: HttpRequest, queryset: QuerySet[ToolChange]) -> None:
        from .tool_changes import reject_tool_change

        self._each(request, queryset, reject_tool_change, "rejected")


@admin.register(Replay)
class ReplayAdmin(TenantScopedAdmin):
    """Replays, read-only here: they are started from the run timeline, the API or the CLI."""

    list_display = ["id", "run", "tenant", "mode", "status", "steps_done", "steps_total",
                    "divergent_steps", "requested_by_label", "created_at", "page"]
    list_filter = ["status", "mode"]
    list_select_related = ["tenant", "run"]
    raw_id_fields = ["run", "approval", "policy_version"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="replay page")
    def page(self, replay: Replay) -> str:
        url = reverse("replay-detail", args=[replay.tenant.slug, replay.pk])
        return format_html('<a href="{}">open</a>', url)
