from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.cache import add_never_cache_headers
from guardian.admin import GuardedModelAdmin

from core.actors import actor_of

from . import services
from .admin_base import ScopedHistoryAdmin, TenantScopedAdmin
from .models import ApiKey, PersonalAccessToken, Tenant
from .roles import Role
from .tenancy import has_role

admin.site.site_header = "ledger-portal"
admin.site.site_title = "ledger-portal"
admin.site.index_title = "Agent Execution Ledger"


class OutageActionForm(ActionForm):
    reason = forms.CharField(required=False, max_length=services.OUTAGE_REASON_MAX,
                             label="Reason (outage mode)",
                             widget=forms.TextInput(attrs={"size": 50}))


@admin.register(Tenant)
class TenantAdmin(GuardedModelAdmin, ScopedHistoryAdmin):  # type: ignore[misc]
    """Tenants and, under "Object permissions", the roles users and groups hold on each.

    Outage mode is switched only by the *outage mode* actions (manage_policies role), which
    record who and why in the tenant's governance log; the form shows it read-only.
    """

    list_display = ["slug", "name", "outage_mode", "retention_days", "created_at"]
    search_fields = ["slug", "name"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["outage_mode"]
    action_form = OutageActionForm
    actions = ["enter_outage_mode", "leave_outage_mode"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return Tenant.objects.for_user(request.user, Role.VIEW_LEDGER)

    # Members see the tenants they belong to; only superusers create tenants or grant roles.
    def _is_superuser(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_superuser)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, Role.VIEW_LEDGER)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return has_role(request.user, Role.VIEW_LEDGER, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._is_superuser(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._is_superuser(request)

    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any,
                                         object_id: str) -> Any:
        raise Http404(f"No tenant with id {object_id!r} among yours.")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tenants own append-only ledgers

    def has_outage_permission(self, request: HttpRequest) -> bool:
        return has_role(request.user, services.OUTAGE_ROLE)

    def _switch_outage(self, request: HttpRequest, queryset: QuerySet[Tenant], on: bool) -> None:
        reason = request.POST.get("reason", "")
        state = "on" if on else "off"
        for tenant in queryset:
            try:
                note = services.set_outage_mode(tenant, by=actor_of(request), on=on, reason=reason)
            except (PermissionDenied, ValidationError) as exc:
                why = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
                self.message_user(request, f"{tenant.slug}: outage mode not switched {state}: "
                                  f"{why}", messages.ERROR)
            else:
                self.message_user(request, f"{tenant.slug}: outage mode {state}" + (
                    " (recorded in the governance log)." if note else " already; nothing "
                    "recorded."), messages.SUCCESS if note else messages.INFO)

    @admin.action(description="Enter outage mode (replays sandbox only; give a reason)",
                  permissions=["outage"])
    def enter_outage_mode(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._switch_outage(request, queryset, True)

    @admin.action(description="Leave outage mode (give a reason)", permissions=["outage"])
    def leave_outage_mode(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        self._switch_outage(request, queryset, False)


class AgentIdsField(forms.CharField):
    """Agent ids separated by spaces, commas or new lines."""

    def prepare_value(self, value: Any) -> Any:
        return " ".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> Any:  # a list of agent ids
        text = super().to_python(value) or ""
        agent_ids = [part for part in text.replace(",", " ").split() if part]
        try:
            return services.checked_agent_ids(agent_ids)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class ApiKeyForm(forms.ModelForm[ApiKey]):
    scopes = forms.MultipleChoiceField(choices=Role.choices, widget=forms.CheckboxSelectMultiple)
    agent_ids = AgentIdsField(
        required=False, label="Agent ids", widget=forms.Textarea(attrs={"rows": 2}),
        help_text="The agents this key records and asks for, separated by spaces (empty: any "
        "agent). Fixed once issued.")

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "agent_ids", "expires_at"]

    # Set by ApiKeyAdmin.get_form: the person minting the key, whose roles bound its scopes.
    minted_by: Any = None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        tenant, scopes = cleaned.get("tenant"), cleaned.get("scopes")
        if tenant is not None and scopes and self.minted_by is not None:
            missing = services.scopes_not_held(scopes, tenant, by=self.minted_by)
            if missing:
                self.add_error("scopes", "You cannot grant scope(s) you do not hold on this "
                               f"tenant: {', '.join(missing)}")
        return cleaned


@admin.register(ApiKey)
class ApiKeyAdmin(TenantScopedAdmin, ScopedHistoryAdmin):
    """API keys: the raw key is shown once, on creation; only its hash is kept."""

    view_role = Role.MANAGE_POLICIES
    edit_role = Role.MANAGE_POLICIES
    form = ApiKeyForm
    list_display = ["name", "tenant", "prefix", "scopes", "agent_ids", "expires_at",
                    "revoked_at", "last_used_at"]
    list_filter = ["tenant"]
    list_select_related = ["tenant"]
    search_fields = ["=prefix", "name"]
    actions = ["revoke", "confirm"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        read_only = ["prefix", "created_by", "created_at", "confirmed_by", "confirmed_at",
                     "revoked_at", "last_used_at",
                     "last_used_ip"]
        if obj is not None:  # a key's tenant, scopes and agents are fixed once issued
            read_only += ["tenant", "scopes", "agent_ids"]
        return read_only

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["tenant", "name", "scopes", "agent_ids", "expires_at"]
        return ["tenant", "name", "prefix", "scopes", "agent_ids", "expires_at", "created_by",
                "created_at",
                "confirmed_by", "confirmed_at", "revoked_at", "last_used_at", "last_used_ip"]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key, raw = services.issue_api_key(obj.tenant, obj.name, form.cleaned_data["scopes"],
                                          by=actor_of(request), expires_at=obj.expires_at,
                                          agent_ids=form.cleaned_data["agent_ids"])
        obj.pk = key.pk
        obj.prefix = key.prefix
        # Shown once on the response to this POST, never through django messages: with the
        # cookie storage a message travels in a cookie (browser, proxies, logs).
        request._new_api_key = raw  # type: ignore[attr-defined]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            form = type("ApiKeyAddForm", (form,), {"minted_by": request.user})
        return form

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: Any = None
                     ) -> HttpResponse:
        raw = getattr(request, "_new_api_key", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        response = TemplateResponse(request, "admin/ledger_portal/apikey/issued.html", {
            **self.admin_site.each_context(request), "title": "New API key",
            "key": obj, "raw_key": raw, "opts": self.model._meta})
        add_never_cache_headers(response)
        return response

    @admin.action(description="Confirm selected API keys (as the second person)",
                  permissions=["change"])
    def confirm(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            try:
                services.confirm_api_key(key, by=actor_of(request))
            except PermissionDenied as exc:
                self.message_user(request, f"{key.name}: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{key.name}: confirmed.")

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.revoke_api_key(key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


class PersonalAccessTokenForm(forms.ModelForm[PersonalAccessToken]):
    scopes = forms.MultipleChoiceField(choices=Role.choices, widget=forms.CheckboxSelectMultiple,
                                       help_text="Roles the token acts with (of yours).")

    class Meta:
        model = PersonalAccessToken
        fields = ["name", "scopes", "expires_at"]

    # Set by PersonalAccessTokenAdmin.get_form: whose token it is.
    owner: Any = None

    def clean(self) -> dict[str, Any]:
        from .access_tokens import checked_token_request

        cleaned = super().clean() or {}
        if cleaned.get("scopes") and cleaned.get("expires_at") and self.owner is not None:
            try:
                checked_token_request(self.owner, cleaned["scopes"], cleaned["expires_at"],
                                      by=self.owner)
            except (PermissionDenied, ValidationError) as exc:
                raise forms.ValidationError(" ".join(exc.messages) if isinstance(
                    exc, ValidationError) else str(exc)) from None
        return cleaned


@admin.register(PersonalAccessToken)
class PersonalAccessTokenAdmin(admin.ModelAdmin[PersonalAccessToken]):
    """Each person's tokens for the ``ledger`` command: issued and revoked here, shown once."""

    form = PersonalAccessTokenForm
    list_display = ["name", "prefix", "user", "scopes", "expires_at", "revoked_at",
                    "last_used_at"]
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[PersonalAccessToken]:
        tokens = super().get_queryset(request).select_related("user")
        if request.user.is_superuser:
            return tokens
        # the admin lets no anonymous request this far; were one to come, it sees nothing
        return tokens.filter(user=request.user) if isinstance(request.user, User) else tokens.none()

    # Everyone signed in to the admin manages their own tokens; no model permission needed.
    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_active and request.user.is_staff)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_module_permission(request) and (
            obj is None or obj.user_id == request.user.pk or request.user.is_superuser)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and self.has_module_permission(request)  # actions only

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked, never deleted: the records that name it keep meaning

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None:
            return ["name", "scopes", "expires_at"]
        return ["name", "user", "prefix", "scopes", "created_at", "expires_at", "revoked_at",
                "last_used_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [] if obj is None else self.get_fields(request, obj)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        from django.utils import timezone

        from .access_tokens import DEFAULT_LIFETIME

        return {"expires_at": timezone.now() + DEFAULT_LIFETIME, "name": "ledger"}

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False,
                 **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        return type("TokenForm", (form,), {"owner": request.user}) if obj is None else form

    def save_model(self, request: HttpRequest, obj: PersonalAccessToken, form: Any,
                   change: bool) -> None:
        from .access_tokens import issue_personal_token

        token, raw = issue_personal_token(request.user,  # type: ignore[arg-type]  # signed in
                                          obj.name, form.cleaned_data["scopes"],
                                          by=actor_of(request), expires_at=obj.expires_at)
        obj.pk, obj.prefix, obj.user = token.pk, token.prefix, token.user
        request._new_token = (token, raw)  # type: ignore[attr-defined]

    def response_add(self, request: HttpRequest, obj: PersonalAccessToken,
                     post_url_continue: Any = None) -> HttpResponse:
        token, raw = request._new_token  # type: ignore[attr-defined]
        response = TemplateResponse(
            request, "admin/ledger_portal/personalaccesstoken/issued.html",
            {**self.admin_site.each_context(request), "title": "New personal access token",
             "token": token, "raw_token": raw, "opts": self.model._meta})
        add_never_cache_headers(response)
        return response

    @admin.action(description="Revoke selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[PersonalAccessToken]) -> None:
        from .access_tokens import revoke_personal_token

        for token in queryset:
            revoke_personal_token(token, by=actor_of(request))
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)

from . import login_admin  # noqa: E402,F401  (the login record, registered beside the rest)
