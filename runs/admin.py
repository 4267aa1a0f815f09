"""Ledger admin: tenant-scoped, read-only changelists that never count a big table."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from core.actors import actor_of
from core.admin_base import (
    ExactSearchAdmin,
    LedgerRecordAdmin,
    ScopedHistoryAdmin,
    TenantScopedAdmin,
)
from core.roles import Role
from core.tenancy import has_role

from .admin_filters import AgentFilter, RecentFilter, StartedBetweenFilter, ToolFilter
from .admin_present import viewer_for
from .links import timeline_url
from .models import (
    Agent,
    Annotation,
    CommitmentKey,
    DeferredItem,
    IntegrityAlarm,
    LegalHold,
    ModelCall,
    RedactionRule,
    RemovalRecord,
    Run,
    Step,
    ToolCall,
)
from .services import find_runs

# Runs a search on the runs list may name (its pages then narrow them as any list).
SEARCH_MATCHES = 1000


def _by_run_or_agent(model_admin: ExactSearchAdmin, request: HttpRequest, term: str) -> list[Q]:
    """The records of the runs a run_id or agent_id names, exactly or else by its start
    (an index range on PostgreSQL, the trigram indexes of migration 0024)."""
    for lookup in ("exact", "istartswith"):
        runs = model_admin.matching_pks(request, Run, **{f"run_id__{lookup}": term})
        if runs:
            return [Q(run_id__in=runs)]
        agents = model_admin.matching_pks(request, Agent, **{f"agent_id__{lookup}": term})
        if agents:
            return [Q(run__agent_id__in=agents)]
    return []


@admin.register(Run)
class RunAdmin(LedgerRecordAdmin):
    content_fields = ("goal", "metadata", "trigger_ref")
    list_display = ["run_id", "tenant", "agent", "status", "started_at", "ended_at", "last_seq",
                    "timeline"]
    list_filter = ["status", AgentFilter, StartedBetweenFilter, RecentFilter]
    list_select_related = ["tenant", "agent"]
    search_fields = ["run_id", "agent_id", "trigger_ref"]
    search_help_text = ("A run_id, agent_id or alert/request reference, whole, its start, or "
                        "(3 characters or more) a part of it.")

    @admin.display(description="timeline")
    def timeline(self, run: Run) -> str:
        url = timeline_url(run.tenant.slug, run.run_id)
        return format_html('<a href="{}">open timeline</a>', url) if url else "-"

    def search_conditions(self, request: HttpRequest, term: str) -> list[Q]:
        # The find box's search: a reference matches only as this viewer sees it.
        found = find_runs(request.user, term, limit=SEARCH_MATCHES).runs
        return [Q(pk__in=[run.pk for run in found])] if found else []


@admin.register(Step)
class StepAdmin(LedgerRecordAdmin):
    content_fields = ("title", "metadata")
    list_display = ["step_id", "index", "title", "run", "tenant", "status", "started_at"]
    list_filter = [RecentFilter]
    list_select_related = ["tenant", "run"]
    search_fields = ["run_id", "step_id"]
    search_help_text = "A run_id or agent_id, or its start."

    def search_conditions(self, request: HttpRequest, term: str) -> list[Q]:
        return _by_run_or_agent(self, request, term)


@admin.register(ModelCall)
class ModelCallAdmin(LedgerRecordAdmin):
    content_fields = ("messages", "request", "response", "error")
    list_display = ["call_id", "model", "provider", "run", "tenant", "input_tokens",
                    "output_tokens", "latency_ms", "started_at", "timeline"]
    list_filter = [RecentFilter]
    list_select_related = ["tenant", "run"]
    search_fields = ["call_id", "run_id", "agent_id"]
    search_help_text = "An exact call_id; a run_id or agent_id, or its start."

    @admin.display(description="timeline")
    def timeline(self, call: ModelCall) -> str:
        return _on_timeline(call, "model_call")

    def search_conditions(self, request: HttpRequest, term: str) -> list[Q]:
        calls = self.matching_pks(request, ModelCall, call_id=term)
        return [Q(pk__in=calls)] if calls else _by_run_or_agent(self, request, term)


@admin.register(ToolCall)
class ToolCallAdmin(LedgerRecordAdmin):
    content_fields = ("input", "output", "error", "tool_call_ref", "idempotency_key")
    list_display = ["call_id", "tool", "action_class", "status", "attempt", "run", "tenant",
                    "started_at", "duration_ms", "timeline"]
    list_filter = ["status", "action_class", ToolFilter, StartedBetweenFilter, RecentFilter]
    list_select_related = ["tenant", "run", "tool"]
    search_fields = ["call_id", "run_id", "agent_id"]
    search_help_text = "An exact call_id; a run_id or agent_id, or its start."

    @admin.display(description="timeline")
    def timeline(self, call: ToolCall) -> str:
        return _on_timeline(call, "tool_call")

    def search_conditions(self, request: HttpRequest, term: str) -> list[Q]:
        calls = self.matching_pks(request, ToolCall, call_id=term)
        return [Q(pk__in=calls)] if calls else _by_run_or_agent(self, request, term)


def _on_timeline(call: ModelCall | ToolCall, kind: str) -> str:
    """A link to the call's row on its run's timeline (the row's anchor is kind-call_id)."""
    url = timeline_url(call.tenant.slug, call.run.run_id)
    return format_html('<a href="{}#{}-{}">on its timeline</a>', url, kind,
                       call.call_id) if url else "-"

@admin.register(Annotation)
class AnnotationAdmin(LedgerRecordAdmin):
    content_fields = ("body", "data")
    list_display = ["annotation_id", "annotation_kind", "run", "tenant", "author_label",
                    "recorded_at"]
    list_filter = ["annotation_kind"]
    list_select_related = ["tenant", "run"]
    search_fields = ["run_id", "annotation_id", "target_call_id"]
    search_help_text = "Exact run_id, annotation_id or call_id."

    def search_conditions(self, request: HttpRequest, term: str) -> list[Q]:
        notes = self.matching_pks(request, Annotation, annotation_id=term)
        if notes:
            return [Q(pk__in=notes)]
        return [*_by_run_or_agent(self, request, term), Q(target_call_id=term)]


class GovernanceAdmin(TenantScopedAdmin, ScopedHistoryAdmin):
    """Mutable, per-tenant governance objects, edited by those who manage policies."""

    edit_role = Role.MANAGE_POLICIES
    list_select_related = ["tenant"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["tenant"] if obj is not None else []


@admin.register(Agent)
class AgentAdmin(GovernanceAdmin):
    list_display = ["agent_id", "name", "tenant", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["=agent_id", "name"]
    fields = ["tenant", "agent_id", "name", "description"]


@admin.register(RedactionRule)
class RedactionRuleAdmin(GovernanceAdmin):
    list_display = ["pattern", "label", "tenant", "note", "created_at"]
    list_filter = ["label", "tenant"]
    search_fields = ["pattern"]
    fields = ["tenant", "pattern", "label", "note"]


class LegalHoldForm(forms.ModelForm[LegalHold]):
    class Meta:
        model = LegalHold
        fields = ["tenant", "run_id", "reason"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        tenant, run_id = data.get("tenant"), data.get("run_id")
        if tenant and run_id and not Run.objects.filter(tenant=tenant, run_id=run_id).exists():
            raise forms.ValidationError({"run_id": f"No run {run_id!r} in {tenant}."})
        return data


@admin.register(LegalHold)
class LegalHoldAdmin(TenantScopedAdmin, ScopedHistoryAdmin):
    """Holds keep runs past retention. Placing and releasing go through the retention service,
    which annotates both; a hold is never edited, only released."""

    edit_role = Role.MANAGE_POLICIES
    form = LegalHoldForm
    list_display = ["__str__", "tenant", "reason", "placed_by", "placed_at", "released_at"]
    list_filter = [("released_at", admin.EmptyFieldListFilter), "tenant"]
    list_select_related = ["tenant", "placed_by"]
    actions = ["release"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        return ["tenant", "run_id", "reason", "placed_by", "placed_at", "released_by",
                "released_at"]

    def save_model(self, request: HttpRequest, obj: LegalHold, form: Any, change: bool) -> None:
        from .retention import place_legal_hold

        if not change:
            obj.pk = place_legal_hold(obj.tenant, by=actor_of(request), reason=obj.reason,
                                      run_id=obj.run_id).pk

    @admin.action(description="Release the selected legal holds")
    def release(self, request: HttpRequest, queryset: QuerySet[LegalHold]) -> None:
        from django.core.exceptions import ValidationError

        from .retention import release_legal_hold

        for hold in queryset.select_related("tenant"):
            if not has_role(request.user, Role.MANAGE_POLICIES, hold.tenant_id):
                self.message_user(request, f"{hold}: releasing needs the manage policies role",
                                  messages.ERROR)
                continue
            try:
                release_legal_hold(hold, by=actor_of(request))
            except ValidationError as exc:
                self.message_user(request, " ".join(exc.messages), messages.WARNING)
            else:
                self.message_user(request, f"{hold} released", messages.SUCCESS)


@admin.register(RemovalRecord)
class RemovalRecordAdmin(TenantScopedAdmin):
    """What retention removed: signed, chained, read-only."""

    list_display = ["number", "tenant", "removed_at", "cutoff", "retention_days", "run_count",
                    "records", "key_id"]
    hash_fields = ("record_hash",)
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    ordering = ["-id"]

    def present(self, request: HttpRequest, obj: Any, hashes: bool = True) -> Any:
        """The removed runs' heads as commitments too: each hashes what its run held."""
        obj = super().present(request, obj, hashes)
        committer = viewer_for(request, obj.tenant_id).committer if hashes else None
        if committer is not None:
            obj.removed_runs = {
                run_id: [seq, committer.as_text("head_hash", head), *rest]
                for run_id, (seq, head, *rest) in obj.removed_runs.items()}
        return obj

    @admin.display(description="runs")
    def run_count(self, record: RemovalRecord) -> int:
        return len(record.removed_runs)


@admin.register(IntegrityAlarm)
class IntegrityAlarmAdmin(TenantScopedAdmin):
    """Run heads the digest sealer refused to sign (read-only: raised by the sealer)."""

    list_display = ["raised_at", "tenant", "run_id", "seq", "digest_number", "detail"]
    hash_fields = ("found_head", "signed_head")
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    search_fields = ["=run_id"]
    ordering = ["-id"]


@admin.register(CommitmentKey)
class CommitmentKeyAdmin(TenantScopedAdmin):
    """The record of each tenant's commitment keys and their rotations. The secret is never
    shown here: an auditor gets it from ``ledger commitment-key``, which is recorded."""

    view_role = Role.MANAGE_POLICIES
    list_display = ["tenant", "generation", "key_id", "created_at", "created_by", "retired_at"]
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    readonly_fields = ("tenant", "generation", "key_id", "created_at", "created_by",
                       "retired_at")
    fields = readonly_fields
    ordering = ["tenant", "-generation"]
    actions = ["rotate"]

    @admin.display(description="key id")
    def key_id(self, key: CommitmentKey) -> str:
        return key.key_id

    @admin.action(description="Rotate: retire the selected tenants' current keys, make the next")
    def rotate(self, request: HttpRequest, queryset: QuerySet[CommitmentKey]) -> None:
        from .commitments import rotate_commitment_key

        for tenant in {key.tenant for key in queryset.select_related("tenant")}:
            if not has_role(request.user, Role.MANAGE_POLICIES, tenant.pk):
                self.message_user(request, f"{tenant}: rotating needs manage_policies",
                                  messages.ERROR)
                continue
            new = rotate_commitment_key(tenant, by=actor_of(request))
            self.message_user(request, f"{tenant}: {new.key_id} is current")


class DeferredActionForm(helpers.ActionForm):
    justification = forms.CharField(
        required=False, label="Justification (to dismiss)",
        widget=forms.TextInput(attrs={"size": 50}))


@admin.register(DeferredItem)
class DeferredItemAdmin(TenantScopedAdmin):
    """The reconciliation queue: what the portal received and could not place yet. Read-only;
    applying and dismissing (operate role) go through ``runs.deferred``."""

    content_fields = ("payload", "reason", "justification")
    list_display = ["id", "tenant", "status", "source", "reason_code", "reason", "run",
                    "received_at", "resolved_by_label"]
    list_filter = ["tenant", "status", "source", "reason_code"]
    list_select_related = ["tenant"]
    search_fields = ["=run_id"]
    search_help_text = "A run_id, whole."
    ordering = ["-id"]
    action_form = DeferredActionForm
    actions = ["apply_selected", "dismiss_selected"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in self.model._meta.fields]

    @admin.display(description="run")
    def run(self, item: DeferredItem) -> str:
        url = timeline_url(item.tenant.slug, item.run_id) if item.run_id else None
        return format_html('<a href="{}">{}</a>', url, item.run_id) if url else (
            item.run_id or "-")

    @admin.action(description="Apply: record what the current mapping places (operate)")
    def apply_selected(self, request: HttpRequest, queryset: QuerySet[DeferredItem]) -> None:
        from django.core.exceptions import PermissionDenied

        from .deferred import apply_deferred

        for item in queryset.select_related("tenant").order_by("id"):
            try:
                outcome = apply_deferred(item, by=actor_of(request))
            except PermissionDenied as exc:
                self.message_user(request, f"item {item.pk}: {exc}", messages.ERROR)
                continue
            level = messages.SUCCESS if outcome.outcome == "applied" else messages.WARNING
            self.message_user(request, f"item {item.pk}: {outcome.outcome.replace('_', ' ')}"
                              f"{': ' + outcome.detail if outcome.detail else ''}", level)

    @admin.action(description="Dismiss with the justification given (operate)")
    def dismiss_selected(self, request: HttpRequest, queryset: QuerySet[DeferredItem]) -> None:
        from django.core.exceptions import PermissionDenied, ValidationError

        from .deferred import dismiss_deferred

        justification = request.POST.get("justification", "")
        for item in queryset.select_related("tenant").order_by("id"):
            try:
                dismiss_deferred(item, by=actor_of(request), justification=justification)
            except PermissionDenied as exc:
                self.message_user(request, f"item {item.pk}: {exc}", messages.ERROR)
            except ValidationError as exc:
                self.message_user(request, f"item {item.pk}: {' '.join(exc.messages)}",
                                  messages.ERROR)
            else:
                self.message_user(request, f"item {item.pk} dismissed", messages.SUCCESS)
