"""Portal pages of the ledger: find a run, and its timeline. Thin: scope, call, render."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from ledger_portal.roles import Role
from ledger_portal.tenancy import has_role
from policies.models import PolicyVersion

from . import services
from .api.presenters import RUN_FIELDS, renamed, values_of
from .models import Replay, Run
from .timeline import build_timeline
from .timeline_html import timeline_rows

MAX_MATCHES = 50


@login_required
def find_run(request: HttpRequest) -> HttpResponse:
    """The search box: a run_id, an agent_id or an alert/request reference."""
    query = request.GET.get("q", "").strip()
    matches = list(services.find_runs(request.user, query)[: MAX_MATCHES + 1]) if query else []
    if len(matches) == 1:
        run = matches[0]
        return redirect(reverse("run-timeline", args=[run.tenant.slug, run.run_id]))
    return render(request, "runs/find.html", {
        **admin.site.each_context(request), "title": "Find a run", "query": query,
        "matches": matches[:MAX_MATCHES], "more": len(matches) > MAX_MATCHES})


@login_required
def run_timeline(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    runs = Run.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, run_id=run_id)
    found = renamed(values_of(runs, RUN_FIELDS, "id", "tenant_id")[:1])
    if not found:
        raise Http404("No such run in your tenants.")
    run = found[0]
    redactor = services.redactor_for(request.user, run["tenant_id"],
                                     request.GET.get("redaction"))
    context: dict[str, Any] = {
        **admin.site.each_context(request), "title": f"Run {run_id}", "run": run,
        "redaction": redactor.level,
        **build_timeline(run, redactor.redact_row),
    }
    context["rows"] = timeline_rows(context["entries"])
    duration = None
    if run.get("ended_at"):
        duration = (run["ended_at"] - run["started_at"]).total_seconds()
    context["duration"] = duration
    context["replays"] = list(Replay.objects.filter(
        tenant_id=run["tenant_id"], run_id=run["id"]).order_by("-id")[:10])
    context["can_replay"] = has_role(request.user, Role.OPERATE, run["tenant_id"])
    if context["can_replay"]:
        context["policy_versions"] = list(PolicyVersion.objects.filter(
            tenant_id=run["tenant_id"]).exclude(status="draft").select_related("policy")
            .order_by("policy__name", "-number")[:50])
    return render(request, "runs/timeline.html", context)
