"""Governance in the admin: policies, their versions and rules, and the policy trail."""

from __future__ import annotations

from functools import partial, partialmethod
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import path, reverse
from django.utils.html import format_html

from core.actors import actor_of
from core.admin_base import ExactSearchAdmin, ScopedHistoryAdmin, TenantScopedAdmin
from core.roles import Role

from . import exceptions, services
from .admin_authoring import DraftAddForm, RuleForm, chosen_default, diff_view, try_condition_view
from .admin_backtests import backtest_form_view  # its module registers BackTestAdmin too
from .models import (
    Decision,
    GovernedException,
    Policy,
    PolicyVersion,
    Rule,
    VersionStatus,
)


class GovernedAdmin(TenantScopedAdmin, ScopedHistoryAdmin):
    view_role = Role.MANAGE_POLICIES
    edit_role = Role.MANAGE_POLICIES
    list_select_related = ["tenant"]


class VersionInline(admin.TabularInline[PolicyVersion, Policy]):
    model = PolicyVersion
    fields = ["link", "status", "change_note", "author", "publisher", "published_at"]
    readonly_fields = ["link", "status", "change_note", "author", "publisher", "published_at"]
    extra = 0
    can_delete = False
    show_change_link = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the policy's admin has already checked the tenant scope

    @admin.display(description="version")
    def link(self, version: PolicyVersion) -> str:
        url = reverse("admin:policies_policyversion_change", args=[version.pk])
        return format_html('<a href="{}">v{}</a>', url, version.number)


@admin.register(Policy)
class PolicyAdmin(GovernedAdmin):
    list_display = ["name", "tenant", "published", "created_at"]
    list_filter = ["tenant"]
    search_fields = ["name"]
    inlines = [VersionInline]
    # What decides (engine, OPA settings, default, rules) is set on a draft version.
    fields = ["tenant", "name", "description"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return ["tenant", "name"] if obj is not None else []

    @admin.display(description="published version")
    def published(self, policy: Policy) -> str:
        version = policy.versions.filter(status=VersionStatus.PUBLISHED).first()
        return f"v{version.number}" if version else "—"


class RuleInline(admin.TabularInline[Rule, PolicyVersion]):
    model = Rule
    form = RuleForm
    fields = ["position", "name", "tool", "action_classes", "agents", "modes", "outage",
              "condition", "effect"]
    extra = 0

    class Media:
        # checks each condition as it is typed, and tries it on a recorded call
        js = ("policies/rule_conditions.js",)
        css = {"all": ("policies/rules.css",)}

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        # the agents offered are the version's tenant's, never another tenant's names
        tenant_id = obj.tenant_id if obj is not None else None
        kwargs["form"] = type("TenantRuleForm", (RuleForm,), {
            "__init__": partialmethod(RuleForm.__init__, tenant_id=tenant_id)})
        return super().get_formset(request, obj, **kwargs)

    # Rules carry no global model permissions: they are editable exactly when their version is
    # a draft the user may change (a tenant role, checked by the version's admin).
    def _editable(self, request: HttpRequest, obj: Any) -> bool:
        if obj is not None and obj.status != VersionStatus.DRAFT:
            return False
        return bool(self.admin_site._registry[PolicyVersion].has_change_permission(request, obj))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._editable(request, obj)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the parent version's admin has already checked the tenant scope


@admin.register(PolicyVersion)
class PolicyVersionAdmin(GovernedAdmin):
    """Drafts are edited here; publishing (by someone other than the author) freezes them."""

    list_display = ["__str__", "tenant", "status", "engine", "author", "publisher",
                    "published_at", "checksum_short"]
    list_filter = ["status", "engine", "tenant"]
    list_select_related = ["tenant", "policy", "author", "publisher"]
    inlines = [RuleInline]
    actions = ["publish", "backtest_last_week"]

    def revert_allowed(self, obj: PolicyVersion) -> bool:
        return obj.is_draft  # published and retired versions are immutable

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A published or retired version is only looked at: its page is read-only and a POST
        # to it is refused, whatever the form says.
        if obj is not None and not obj.is_draft:
            return False
        return super().has_change_permission(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = DraftAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["policy", "default", "change_note"]
        return ["policy", "number", "status", "copied_from", *PolicyVersion.DECIDING_FIELDS,
                "change_note", "author", "created_at", "publisher", "published_at",
                "retired_at", "checksum", "compare", "backtest_link"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return []
        fixed = ["policy", "number", "status", "copied_from", "author", "created_at",
                 "publisher", "published_at", "retired_at", "checksum", "compare",
                 "backtest_link"]
        return fixed if obj.is_draft else [*fixed, *PolicyVersion.DECIDING_FIELDS,
                                           "change_note"]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "opa_url":
            kwargs["assume_scheme"] = "https"  # Django 6's default, and what a bare host means
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "policy":
            kwargs["queryset"] = Policy.objects.for_user(request.user, self.edit_role)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: PolicyVersion, form: Any,
                   change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        draft = services.create_draft(obj.policy, by=actor_of(request),
                                      change_note=obj.change_note, **chosen_default(form))
        obj.pk, obj.number, obj.tenant_id = draft.pk, draft.number, draft.tenant_id
        obj._state.adding = False

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        for rule in formset.save(commit=False):
            rule.tenant_id = form.instance.tenant_id
            rule.save()
        for rule in formset.deleted_objects:
            rule.delete()

    @admin.display(description="copied from")
    def copied_from(self, version: PolicyVersion) -> str:
        base = version.based_on
        if base is None:
            return "nothing: the policy's first version" if version.number == 1 else "—"
        return format_html(
            '<a href="{}">v{}</a> ({}{}) · <a href="{}">what this version changes</a>',
            reverse("admin:policies_policyversion_change", args=[base.pk]), base.number,
            base.status, ", published when this was drafted" if base.published_at and (
                base.published_at <= version.created_at) else "",
            reverse("admin:policies_policyversion_diff", args=[base.pk, version.pk]))

    @admin.display(description="checksum")
    def checksum_short(self, version: PolicyVersion) -> str:
        return version.checksum[:12]

    @admin.display(description="compare with")
    def compare(self, version: PolicyVersion) -> str:
        others = version.policy.versions.exclude(pk=version.pk).order_by("-number")[:5]
        links = [format_html('<a href="{}">v{}</a>', reverse(
            "admin:policies_policyversion_diff", args=[other.pk, version.pk]), other.number)
            for other in others]
        return format_html(", ".join(["{}"] * len(links)), *links) if links else "—"

    @admin.action(description="Publish selected drafts", permissions=["change"])
    def publish(self, request: HttpRequest, queryset: QuerySet[PolicyVersion]) -> None:
        for version in queryset:
            try:
                services.publish_policy_version(version, by=actor_of(request))
            except ValidationError as exc:
                self.message_user(request, f"{version}: {' '.join(exc.messages)}",
                                  messages.ERROR)
            else:
                self.message_user(request, f"Published {version.policy.name} "
                                  f"v{version.number}.", messages.SUCCESS)

    @admin.action(description="Back-test against the tool calls of the last 7 days",
                  permissions=["change"])
    def backtest_last_week(self, request: HttpRequest,
                           queryset: QuerySet[PolicyVersion]) -> None:
        from datetime import timedelta

        from django.utils import timezone

        from .backtest import start_backtest

        now = timezone.now()
        for version in queryset:
            test = start_backtest(version, now - timedelta(days=7), now, by=actor_of(request))
            url = reverse("admin:policies_backtest_change", args=[test.pk])
            self.message_user(request, format_html(
                'Back-test of {} queued: <a href="{}">follow its progress</a>.', version, url),
                messages.SUCCESS)

    def get_urls(self) -> list[Any]:
        diff = path("<id:old>/diff/<id:new>/", self.admin_site.admin_view(
            partial(diff_view, self)), name="policies_policyversion_diff")
        trial = path("<id:pk>/try-condition/", self.admin_site.admin_view(
            partial(try_condition_view, self)), name="policies_policyversion_try_condition")
        backtest = path("<id:pk>/backtest/", self.admin_site.admin_view(
            partial(backtest_form_view, self)), name="policies_policyversion_backtest")
        return [diff, backtest, trial, *super().get_urls()]

    @admin.display(description="back-test")
    def backtest_link(self, version: PolicyVersion) -> str:
        url = reverse("admin:policies_policyversion_backtest", args=[version.pk])
        return format_html('<a href="{}">Back-test this version on recorded calls…</a>', url)


@admin.register(Decision)
class DecisionAdmin(ExactSearchAdmin):
    """The policy trail, read-only."""
    content_fields = ("input", "reason")

    list_display = ["created_at", "tool", "action_class", "effect", "mode", "agent_id",
                    "run", "call_id", "policy_version", "latency_us", "tenant"]
    list_filter = ["effect", "mode", "engine", "action_class"]
    list_select_related = ["tenant", "policy_version__policy"]
    ordering = ["-id"]
    sortable_by = ()
    list_max_show_all = 0  # "show all" of the whole trail: never
    lean_changelist = True  # run() reads ids only: input and reason are never loaded
    change_list_template = "admin/lean_change_list.html"  # rows by core/admin_rows.py
    search_fields = ["call_id", "run_id"]
    search_help_text = "Exact call_id or run_id."

    def search_conditions(self, request: HttpRequest, term: str) -> list[Any]:
        from django.db.models import Q

        return [Q(call_id=term) | Q(run_id=term)]

    @admin.display(description="run")
    def run(self, decision: Decision) -> str:
        from runs.links import timeline_url

        url = timeline_url(decision.tenant.slug, decision.run_id) if decision.run_id else ""
        return format_html('<a href="{}#tool_call-{}">{}</a>', url, decision.call_id,
                           decision.run_id) if url else decision.run_id or "-"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [f.name for f in self.model._meta.fields]


@admin.register(GovernedException)
class GovernedExceptionAdmin(GovernedAdmin):
    """Exceptions are requested here and granted by someone else (two people for exfil)."""
    # written from what agents did (a customer's case): redacted like ledger content
    content_fields = ("justification",)

    list_display = ["__str__", "tenant", "tool", "agent_id", "action_class", "effect",
                    "status", "starts_at", "ends_at", "requested_by", "granted_by"]
    list_filter = ["status", "effect", "tenant"]
    list_select_related = ["tenant", "requested_by", "granted_by"]
    actions = ["grant", "revoke"]
    fields = ["policy_version", "tool", "agent_id", "action_class", "effect", "justification",
              "starts_at", "ends_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields if obj is not None else []

    def revert_allowed(self, obj: GovernedException) -> bool:
        return False  # an exception changes only through grant and revoke, never a revert

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "policy_version":
            kwargs["queryset"] = PolicyVersion.objects.for_user(
                request.user, self.edit_role).filter(status=VersionStatus.PUBLISHED)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: GovernedException, form: Any,
                   change: bool) -> None:
        if change:
            return  # an exception changes only through grant and revoke
        created = exceptions.request_exception(
            obj.policy_version.tenant, by=actor_of(request), tool=obj.tool,
            policy_version=obj.policy_version, justification=obj.justification,
            starts_at=obj.starts_at, ends_at=obj.ends_at, effect=obj.effect,
            agent_id=obj.agent_id, action_class=obj.action_class)
        obj.pk = created.pk
        obj._state.adding = False

    def _each(self, request: HttpRequest, queryset: QuerySet[GovernedException],
              operation: Any, done: str) -> None:
        for exc in queryset:
            try:
                updated = operation(exc, by=request.user)
            except (ValidationError, PermissionDenied) as error:
                text = " ".join(error.messages) if isinstance(error, ValidationError) else str(
                    error)
                self.message_user(request, f"{exc}: {text}", messages.ERROR)
            else:
                self.message_user(request, f"exception {exc.pk}: {done} ({updated.status})",
                                  messages.SUCCESS)

    @admin.action(description="Grant the selected exceptions", permissions=["change"])
    def grant(self, request: HttpRequest, queryset: QuerySet[GovernedException]) -> None:
        self._each(request, queryset, exceptions.grant_exception, "granted")

    @admin.action(description="Revoke the selected exceptions", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[GovernedException]) -> None:
        self._each(request, queryset, exceptions.revoke_exception, "revoked")
