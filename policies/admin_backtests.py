"""Back-tests in the admin: a form to choose the window, agents and tools, and a result page
(progress while the worker runs it, then each tool's calls before and after, and every
changed call with a link to it on its run's timeline)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from core.actors import actor_of
from core.admin_base import TenantScopedAdmin
from core.roles import Role
from runs.links import timeline_url
from runs.models import Agent, Tool

from .backtest import start_backtest
from .models import BackTest, BackTestStatus, PolicyVersion

CHANGES_PER_PAGE = 50
LOCAL_INPUT = "%Y-%m-%dT%H:%M"


class BackTestForm(forms.Form):
    window_from = forms.DateTimeField(
        label="From (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                       format=LOCAL_INPUT))
    window_to = forms.DateTimeField(
        label="To (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local"},
                                                     format=LOCAL_INPUT))
    agents = forms.MultipleChoiceField(
        required=False, widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="None chosen: every agent. Ctrl/Cmd-click to choose several.")
    tools = forms.MultipleChoiceField(
        required=False, widget=forms.SelectMultiple(attrs={"size": 8}),
        help_text="None chosen: every tool.")

    def __init__(self, version: PolicyVersion, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The version's tenant only: its agents and tools, never another tenant's names.
        self.fields["agents"].choices = [(a, a) for a in Agent.objects.filter(
            tenant_id=version.tenant_id).order_by("agent_id").values_list("agent_id", flat=True)]
        self.fields["tools"].choices = [(t, t) for t in Tool.objects.filter(
            tenant_id=version.tenant_id).order_by("name").values_list("name", flat=True)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("window_from"), data.get("window_to")
        if start and end and start >= end:
            raise ValidationError("The window must end after it starts.")
        return data


def backtest_form_view(model_admin: Any, request: HttpRequest, pk: int) -> HttpResponse:
    """``PolicyVersionAdmin``'s *Back-test* page (any version of a policy the person governs)."""
    version = model_admin.get_queryset(request).filter(pk=pk).select_related("policy").first()
    if version is None:
        raise Http404("No such version among your policies.")
    now = timezone.now().replace(second=0, microsecond=0)
    form = BackTestForm(version, request.POST or None, initial={
        "window_from": now - timedelta(days=7), "window_to": now + timedelta(minutes=1)})
    if request.method == "POST" and form.is_valid():
        try:
            test = start_backtest(version, form.cleaned_data["window_from"],
                                  form.cleaned_data["window_to"], by=actor_of(request),
                                  agents=form.cleaned_data["agents"],
                                  tools=form.cleaned_data["tools"])
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Back-test of {version} queued.")
            return HttpResponseRedirect(reverse("admin:policies_backtest_change",
                                                args=[test.pk]))
    return TemplateResponse(request, "policies/backtest_form.html", {
        **model_admin.admin_site.each_context(request), "title": f"Back-test {version}",
        "version": version, "form": form, "opts": model_admin.model._meta,
        "earlier": BackTest.objects.filter(tenant_id=version.tenant_id, version=version)
        .order_by("-id")[:10]})


@admin.register(BackTest)
class BackTestAdmin(TenantScopedAdmin):
    """Back-tests: progress while they run, then what the draft would decide differently."""

    view_role = Role.MANAGE_POLICIES
    list_display = ["__str__", "tenant", "status", "progress", "changed", "window_from",
                    "window_to", "created_at"]
    list_filter = ["status", "tenant"]
    list_select_related = ["tenant", "version__policy"]
    ordering = ["-id"]

    @admin.display(description="progress")
    def progress(self, test: BackTest) -> str:
        return f"{test.processed:,} / {test.total:,} ({test.percent}%)"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*(f.name for f in self.model._meta.fields), "progress"]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        test = self.get_object(request, object_id)
        if test is None or not self.has_view_permission(request, test):
            raise Http404("No such back-test among your policies.")
        changes = Paginator(test.changes.filter(tenant_id=test.tenant_id).order_by("id"),
                            CHANGES_PER_PAGE).get_page(request.GET.get("page"))
        for change in changes:
            change.link = _call_link(test.tenant.slug, change.run_id, change.call_id)
        return TemplateResponse(request, "policies/backtest.html", {
            **self.admin_site.each_context(request), "title": str(test), "test": test,
            "opts": self.model._meta, "running": test.status in (
                BackTestStatus.QUEUED, BackTestStatus.RUNNING),
            "tools": sorted(test.counts.items()), "changes": changes})


def _call_link(tenant_slug: str, run_id: str, call_id: str) -> str:
    url = timeline_url(tenant_slug, run_id)
    return f"{url}#tool_call-{call_id}" if url else ""
