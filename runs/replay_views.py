"""Replay pages: start one from the run timeline, follow it, read and export its divergences."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from ledger_portal.roles import Role
from policies.models import PolicyVersion

from .models import Replay, ReplayMode, Run
from .replay import ReplayRefused, start_replay
from .replay_present import (
    REPLAY_RELATED,
    redacted_divergence_report,
    replay_summary,
    step_rows,
)
from .services import redactor_for


def _replay_or_404(request: HttpRequest, tenant: str, replay_id: int) -> Replay:
    replay = Replay.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, pk=replay_id).select_related(*REPLAY_RELATED).first()
    if replay is None:
        raise Http404("No such replay in your tenants.")
    return replay


@login_required
def replay_detail(request: HttpRequest, tenant: str, replay_id: int) -> HttpResponse:
    replay = _replay_or_404(request, tenant, replay_id)
    view = redactor_for(request.user, replay.tenant_id, request.GET.get("redaction"))
    return render(request, "runs/replay.html", {
        **admin.site.each_context(request), "title": f"Replay {replay.pk} of {replay.run.run_id}",
        "replay": replay, "summary": replay_summary(replay), "steps": step_rows(replay, view),
        "redaction": view.level})


@login_required
def divergence_export(request: HttpRequest, tenant: str, replay_id: int) -> HttpResponse:
    """The divergence report as a JSON download (redacted strictly: it leaves the portal)."""
    replay = _replay_or_404(request, tenant, replay_id)
    report = redacted_divergence_report(replay, redactor_for(request.user, replay.tenant_id))
    response = JsonResponse(report, json_dumps_params={"indent": 2})
    response["Content-Disposition"] = (
        f'attachment; filename="replay-{replay.pk}-{replay.run.run_id}-divergences.json"')
    return response


@login_required
@require_POST
def replay_run(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    run = Run.objects.for_user(request.user, Role.OPERATE).filter(
        tenant__slug=tenant, run_id=run_id).select_related("tenant", "agent").first()
    if run is None:
        raise Http404("No such run among the tenants you may operate on.")
    mode = request.POST.get("mode") or ReplayMode.SANDBOX
    until = request.POST.get("until_step", "").strip()
    version_id = request.POST.get("policy_version", "").strip()
    version = None
    if version_id:
        version = PolicyVersion.objects.filter(tenant=run.tenant, pk=version_id).first() \
            if version_id.isdigit() else None
        if version is None:
            messages.error(request, f"No policy version {version_id!r} in {tenant}.")
            return redirect("run-timeline", tenant, run_id)
    if until and not until.isdigit():
        messages.error(request, "Until step is a plan step number.")
        return redirect("run-timeline", tenant, run_id)
    try:
        replay = start_replay(run, request.user, mode=mode,
                              until_step=int(until) if until else None, policy_version=version)
    except (ReplayRefused, PermissionDenied) as exc:
        messages.error(request, str(exc))
        return redirect("run-timeline", tenant, run_id)
    messages.success(request, f"Replay {replay.pk} ({replay.mode}) "
                     + ("is waiting for approval." if replay.approval_id else "is queued."))
    return redirect("replay-detail", tenant, replay.pk)
