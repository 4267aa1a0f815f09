"""Portal pages of the ledger: find a run, and its timeline. Thin: scope, call, render."""

from __future__ import annotations

from functools import partial
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from core.actors import Viewer, actor_of
from core.db_routing import stale_ok
from core.rendering import render_around
from core.roles import Role
from core.tenancy import has_role

from . import services
from .api.presenters import RUN_FIELDS, renamed, values_of
from .deferred import pending_on_run
from .links import timeline_url
from .models import Run
from .redaction import as_text
from .search import CONTAINS_MIN_LENGTH
from .timeline import ShownPart, build_timeline, calls_of_step, first_calls_per_step, is_long
from .timeline_html import MoreCalls, timeline_rows, unrecorded_decisions
from .timeline_panels import panel_context

MAX_MATCHES = 50
#: deferred items listed on a timeline (the count says how many there are)
DEFERRED_SHOWN = 20


@login_required
@stale_ok  # runs recorded seconds ago may be missing; the search box is read-only
def find_run(request: HttpRequest) -> HttpResponse:
    """The search box: a run_id, an agent_id or an alert/request reference, whole or in part.
    A single match, or a single exact one among others, opens its timeline."""
    query = request.GET.get("q", "").strip()
    search = services.find_runs(request.user, query, limit=MAX_MATCHES)
    one = search.matches if len(search.matches) == 1 else search.exact
    if len(one) == 1 and (url := timeline_url(one[0].run.tenant.slug, one[0].run.run_id)):
        return redirect(url)
    services.shown_trigger_refs(request.user, search.runs)
    return render(request, "runs/find.html", {
        **admin.site.each_context(request), "title": "Find a run", "query": query,
        "matches": search.matches, "more": search.more,
        "contains_skipped": search.contains_skipped,
        "contains_min_length": CONTAINS_MIN_LENGTH})


def _shown_run(shown: dict[str, Any]) -> dict[str, Any]:
    return {**shown, "goal": as_text(shown["goal"]), "trigger_ref": as_text(shown["trigger_ref"])}


def _visible_run_row(request: HttpRequest, tenant: str, run_id: str) -> dict[str, Any]:
    runs = Run.objects.for_user(request.user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, run_id=run_id)
    found = renamed(values_of(runs, RUN_FIELDS, "id", "tenant_id")[:1])
    if not found:
        raise Http404("No such run in your tenants.")
    return found[0]


def _more_calls(request: HttpRequest, tenant: str, run_id: str, part: ShownPart | None,
                level: str) -> dict[str | None, MoreCalls]:
    """The link to each step's calls the page leaves out (at the reader's level)."""
    if part is None:
        return {}
    url = reverse("run-step-calls", args=[tenant, run_id])
    links = {}
    for step_id, (count, after) in part.hidden.items():
        query = {"after": after, **({"step": step_id} if step_id is not None else {}),
                 **({"redaction": level} if level != "strict" else {})}
        links[step_id] = MoreCalls(count, f"{url}?{urlencode(query)}", step_id)
    return links


@login_required
@stale_ok  # a timeline seconds behind: reload to see the newest records
def run_timeline(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    run = _visible_run_row(request, tenant, run_id)
    redactor = services.redactor_for(request.user, run["tenant_id"],
                                     request.GET.get("redaction"),
                                     viewing=f"run {run_id} (timeline page)")
    # a long run shows each step with its first calls; the rest load on demand
    part = first_calls_per_step(run) if is_long(run) else None
    context: dict[str, Any] = {
        **admin.site.each_context(request), "title": f"Run {run_id}",
        "run": _shown_run(redactor.redact_row("run", run)),
        "redaction": redactor.level, "shown_part": part,
        # its rows show no hashes: emptied, not committed to (2,000 HMACs saved a page)
        **build_timeline(run, partial(redactor.redact_row, commit=False), part),
    }
    context.update(panel_context(request, tenant, run, redactor))  # replays, rollbacks
    context["rows"] = timeline_rows(context["entries"], context.get("rollbacks"),
                                    _more_calls(request, tenant, run_id, part, redactor.level))
    context["unrecorded"] = unrecorded_decisions(context["unrecorded_decisions"])
    # the switch offers the levels this reader may use; each use below strict is recorded
    # (redactor_for) as a disclosure
    context["redaction_levels"] = services.allowed_levels(request.user, run["tenant_id"])
    context.update(_deferred_on(run, redactor))
    context["can_annotate"] = has_role(request.user, Role.OPERATE, run["tenant_id"])
    context["annotation_kinds"] = services.MANUAL_ANNOTATION_KINDS
    return render_around(request, "runs/timeline.html", context, "rows")


@login_required
@stale_ok  # as the timeline it belongs to
def run_step_calls(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    """A step's calls after ``seq`` ``after`` (``step`` absent: calls outside any step), as
    a long run's timeline leaves them out: a page of their own, or with ``fragment=1`` only
    the table rows, which the timeline's script puts in place of its "more" link."""
    after = request.GET.get("after", "0")
    if not after.isdigit():
        return HttpResponseBadRequest("after: a seq (a whole number)")
    run = _visible_run_row(request, tenant, run_id)
    step_id = request.GET.get("step")
    redactor = services.redactor_for(request.user, run["tenant_id"],
                                     request.GET.get("redaction"),
                                     viewing=f"run {run_id} (calls of a step)")
    part = calls_of_step(run, step_id, int(after))
    built = build_timeline(run, partial(redactor.redact_row, commit=False), part)
    rollbacks = panel_context(request, tenant, run, redactor).get("rollbacks")
    rows = timeline_rows(built["entries"], rollbacks,
                         _more_calls(request, tenant, run_id, part, redactor.level))
    if request.GET.get("fragment"):
        return HttpResponse(rows, content_type="text/html; charset=utf-8")
    return render_around(request, "runs/step_calls.html", {
        **admin.site.each_context(request), "title": f"Run {run_id}: calls of a step",
        "run": {"tenant": tenant, "run_id": run_id}, "step_id": step_id,
        "redaction": redactor.level, "rows": rows, "after": int(after),
        "span_seconds": built["span_seconds"]}, "rows")


def _deferred_on(run: dict[str, Any], redactor: services.ViewerRedaction) -> dict[str, Any]:
    """Where the run's data is missing: its pending deferred items, reasons redacted."""
    count, items = pending_on_run(run["tenant_id"], run["run_id"], DEFERRED_SHOWN)
    shown = [{**item, "reason": as_text(redactor.redactor.redact(item["reason"], "reason"))}
             for item in items]
    return {"deferred": shown, "deferred_count": count}


def visible_run_or_404(user: Viewer, tenant: str, run_id: str) -> Run:
    """The run a page's form posts about, among those ``user`` may see; a 404 otherwise (a run
    outside your tenants looks the same as one that does not exist)."""
    run: Run | None = Run.objects.for_user(user, Role.VIEW_LEDGER).filter(
        tenant__slug=tenant, run_id=run_id).first()
    if run is None:
        raise Http404("No such run in your tenants.")
    return run


@login_required
@require_POST
def run_annotate(request: HttpRequest, tenant: str, run_id: str) -> HttpResponse:
    """The timeline's *Record an intervention* form: one annotation on this run's chain."""
    run = visible_run_or_404(request.user, tenant, run_id)
    try:
        note = services.annotate_run(run, by=actor_of(request), body=request.POST.get("body", ""),
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
