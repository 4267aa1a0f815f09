"""Portal pages of the ledger: find a run, and its timeline. Thin: scope, call, render."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from ledger_portal.roles import Role
from ledger_portal.tenancy import has_role
from policies.models import PolicyVersion

from . import services
from .api.presenters import RUN_FIELDS, renamed, values_of
from .links import timeline_url
from .models import Replay, Rollback, Run, ToolCall
from .redaction import as_text
from .timeline import build_timeline
from .timeline_html import RollbackControls, timeline_rows

MAX_MATCHES = 50


@login_required
def find_run(request: HttpRequest) -> HttpResponse:
    """The search box: a run_id, an agent_id or an alert/request reference."""
    query = request.GET.get("q", "").strip()
    matches = list(services.find_runs(request.user, query)[: MAX_MATCHES + 1]) if query else []
    if len(matches) == 1 and (url := timeline_url(matches[0].tenant.slug, matches[0].run_id)):
        return redirect(url)
    return render(request, "runs/find.html", {
        **admin.site.each_context(request), "title": "Find a run", "query": query,
        "matches": services.shown_trigger_refs(request.user, matches[:MAX_MATCHES]),
        "more": len(matches) > MAX_MATCHES})


def _shown_run(shown: dict[str, Any]) -> dict[str, Any]:
    return {**shown, "goal": as_text(shown["goal"]), "trigger_ref": as_text(shown["trigger_ref"])}


@login_required
def run_timeline(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    runs = Run.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, run_id=run_id)
    found = renamed(values_of(runs, RUN_FIELDS, "id", "tenant_id")[:1])
    if not found:
        raise Http404("No such run in your tenants.")
    run = found[0]
    redactor = services.redactor_for(request.user, run["tenant_id"],
                                     request.GET.get("redaction"),
                                     viewing=f"run {run_id} (timeline page)")
    context: dict[str, Any] = {
        **admin.site.each_context(request), "title": f"Run {run_id}",
        "run": _shown_run(redactor.redact_row("run", run)),
        "redaction": redactor.level,
        # its rows show no hashes: emptied, not committed to (2,000 HMACs saved a page)
        **build_timeline(run, partial(redactor.redact_row, commit=False)),
    }
    controls = _rollback_controls(request, tenant, run)
    context["rollbacks"] = controls
    context["rows"] = timeline_rows(context["entries"], controls)
    duration = None
    if run.get("ended_at"):
        duration = (run["ended_at"] - run["started_at"]).total_seconds()
    context["duration"] = duration
    context["replays"] = list(Replay.objects.filter(
        tenant_id=run["tenant_id"], run_id=run["id"]).order_by("-id")[:10])
    context["can_replay"] = has_role(request.user, Role.OPERATE, run["tenant_id"])
    context["can_annotate"] = context["can_replay"]  # both need the operate role
    context["annotation_kinds"] = services.MANUAL_ANNOTATION_KINDS
    if context["can_replay"]:
        context["policy_versions"] = list(PolicyVersion.objects.filter(
            tenant_id=run["tenant_id"]).exclude(status="draft").select_related("policy")
            .order_by("policy__name", "-number")[:50])
    return render(request, "runs/timeline.html", context)


def _rollback_controls(request: HttpRequest, tenant: str, run: dict[str, Any]
                       ) -> RollbackControls | None:
    """Roll back buttons for operators: on completed calls whose tool supports compensation
    and that were not rolled back yet (those show their rollback's status instead)."""
    if not has_role(request.user, Role.OPERATE, run["tenant_id"]):
        return None
    from .rollback import compensable_calls

    stored = Run(pk=run["id"], tenant_id=run["tenant_id"])
    done = dict(Rollback.objects.filter(tenant_id=run["tenant_id"], run_id=run["id"])
                .values_list("tool_call__call_id", "status"))
    eligible = set(compensable_calls(stored).values_list("call_id", flat=True)) - set(done)
    return RollbackControls(reverse("run-rollback", args=[tenant, run["run_id"]]),
                            get_token(request), eligible, done)


@login_required
@require_POST
def run_rollback(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    """The timeline's buttons: roll back one call (``call_id``) or the whole run."""
    from .rollback import request_rollback, request_run_rollback

    run = Run.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, run_id=run_id).first()
    if run is None:
        raise Http404("No such run in your tenants.")
    call_id = request.POST.get("call_id", "")
    try:
        if call_id:
            call = ToolCall.objects.filter(tenant_id=run.tenant_id, run=run,
                                           call_id=call_id).first()
            if call is None:
                raise Http404("No such call in this run.")
            rollback, queued = request_rollback(call, request.user)
            messages.success(request, f"Rollback of {call_id} queued." if queued else
                             f"{call_id} was already rolled back ({rollback.status}).")
        else:
            rollbacks = request_run_rollback(run, request.user)
            messages.success(request, f"Rolling back {len(rollbacks)} call(s), latest first.")
    except (PermissionDenied, ValidationError) as exc:
        messages.error(request, " ".join(exc.messages) if isinstance(exc, ValidationError)
                       else str(exc))
    return redirect(reverse("run-timeline", args=[tenant, run_id]))


@login_required
@require_POST
def run_annotate(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    """The timeline's *Record an intervention* form: one annotation on this run's chain."""
    run = Run.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, run_id=run_id).first()
    if run is None:
        raise Http404("No such run in your tenants.")
    try:
        note = services.annotate_run(run, request.user, request.POST.get("body", ""),
                                     kind=request.POST.get("kind") or "note")
    except Run.DoesNotExist:
        raise Http404("No such run in your tenants.") from None
    except PermissionDenied as exc:
        messages.error(request, str(exc))
    except ValidationError as exc:
        messages.error(request, f"Nothing was recorded: {' '.join(exc.messages)}")
    else:
        messages.success(request, f"Recorded {note.annotation_kind} {note.annotation_id} "
                         f"(seq {note.seq}).")
    return redirect(reverse("run-timeline", args=[tenant, run_id]))
