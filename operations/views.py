"""Replay pages: start one from the run timeline, follow it, read and export its divergences,
follow them up (one replay's on its page, every open one on the divergence list)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_POST

from core.actors import actor_of
from core.roles import Role
from core.tenancy import has_role
from policies.models import PolicyVersion
from runs.models import Run
from runs.services import redactor_for

from .divergences import FollowUpRefused, divergences_for, set_divergence_follow_up
from .models import FollowUp, Replay, ReplayMode, ReplayStep
from .replay import start_replay
from .replay_present import (
    REPLAY_RELATED,
    divergence_rows,
    redacted_divergence_report,
    replay_summary,
    step_rows,
)


def _replay_or_404(request: HttpRequest, tenant: str, replay_id: int) -> Replay:
    replay = Replay.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, pk=replay_id).select_related(*REPLAY_RELATED).first()
    if replay is None:
        raise Http404("No such replay in your tenants.")
    return replay


@login_required
def replay_detail(request: HttpRequest, tenant: str, replay_id: int) -> HttpResponse:
    replay = _replay_or_404(request, tenant, replay_id)
    view = redactor_for(request.user, replay.tenant_id, request.GET.get("redaction"),
                        viewing=f"replay {replay.pk} (replay page)")
    return render(request, "runs/replay.html", {
        **admin.site.each_context(request), "title": f"Replay {replay.pk} of {replay.run.run_id}",
        "replay": replay, "summary": replay_summary(replay), "steps": step_rows(replay, view),
        "redaction": view.level, "may_follow_up": has_role(request.user, Role.OPERATE,
                                                             replay.tenant_id),
        "follow_up_states": FollowUp.choices})


@login_required
def divergence_export(request: HttpRequest, tenant: str, replay_id: int) -> HttpResponse:
    """The divergence report as a JSON download (redacted strictly: it leaves the portal)."""
    replay = _replay_or_404(request, tenant, replay_id)
    report = redacted_divergence_report(replay, redactor_for(request.user, replay.tenant_id))
    response = JsonResponse(report, json_dumps_params={"indent": 2})
    # Django quotes the name (RFC 6266 / 5987): a legacy run id cannot break or inject headers
    response["Content-Disposition"] = content_disposition_header(
        True, f"replay-{replay.pk}-{replay.run.run_id}-divergences.json")
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
        replay = start_replay(run, by=actor_of(request), mode=mode,
                              until_step=int(until) if until else None, policy_version=version)
    except PermissionDenied as exc:  # a ReplayRefused too
        messages.error(request, str(exc))
        return redirect("run-timeline", tenant, run_id)
    messages.success(request, f"Replay {replay.pk} ({replay.mode}) "
                     + ("is waiting for approval." if replay.approval_id else "is queued."))
    return redirect("replay-detail", tenant, replay.pk)


@login_required
@require_POST
def step_follow_up(request: HttpRequest, tenant: str, replay_id: int, seq: int) -> HttpResponse:
    """The follow-up form of a flagged step on the replay page."""
    replay = _replay_or_404(request, tenant, replay_id)
    step = ReplayStep.objects.filter(replay=replay, seq=seq).first()
    if step is None:
        raise Http404("No such step in this replay.")
    try:
        set_divergence_follow_up(step, by=actor_of(request), state=request.POST.get("state", ""),
                                 note=request.POST.get("note", ""))
    except FollowUpRefused as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Step {seq}: follow-up recorded.")
    return redirect(reverse("replay-detail", args=[tenant, replay.pk]) + f"#step-{seq}")


DIVERGENCE_PAGE_SIZE = 100


@login_required
def divergence_list(request: HttpRequest) -> HttpResponse:
    """Divergences of the reader's tenants' replays, open ones by default, newest first."""
    state = request.GET.get("state") or FollowUp.OPEN
    if state != "all" and state not in FollowUp.values:
        raise Http404(f"No follow-up state {state!r}.")
    tenant, tool = request.GET.get("tenant") or None, request.GET.get("tool") or None
    steps = divergences_for(request.user, state=None if state == "all" else state,
                            tenant=tenant, tool=tool)
    before = request.GET.get("before", "")
    if before.isdigit():
        steps = steps.filter(pk__lt=int(before))
    page = list(steps[:DIVERGENCE_PAGE_SIZE + 1])
    rows = divergence_rows(page[:DIVERGENCE_PAGE_SIZE], request.user)
    older = None
    if len(page) > DIVERGENCE_PAGE_SIZE:
        query = request.GET.copy()
        query["before"] = str(page[DIVERGENCE_PAGE_SIZE - 1].pk)
        older = f"?{query.urlencode()}"
    return render(request, "runs/divergences.html", {
        **admin.site.each_context(request), "title": "Divergences to follow up",
        "rows": rows, "state": state, "tenant": tenant or "", "tool": tool or "",
        "states": [(FollowUp.OPEN.value, FollowUp.OPEN.label),
                   *[(v, lab) for v, lab in FollowUp.choices if v != FollowUp.OPEN],
                   ("all", "all")],
        "older": older})
