"""Domain operations on the ledger; every entry point (API, admin, pages, CLI, tasks) calls
these."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet

from core.actors import Actor, Viewer, acting
from core.payload_safety import unsafe_paths
from core.roles import Role
from core.tenancy import has_role

from .annotations import annotate
from .commitments import HASH_FIELDS, Committer, committer_for
from .ingest import BatchConflict, BatchInvalid, BatchRejected, IngestResult, ingest_batch
from .models import Annotation, AnnotationKind, RedactionRule, Run, ToolCall
from .redaction import LEVELS, Redactor, TenantRule, as_text
from .search import TRIGGER_SCAN_LIMIT, RunSearch, ShownTrigger, search_runs

__all__ = ["MANUAL_ANNOTATION_KINDS", "MANUAL_KIND_WORDS", "AnnotationRejected",
           "BatchConflict", "BatchInvalid",
           "BatchRejected", "IngestResult", "RedactionNotAllowed", "RunSearch", "ViewerRedaction",
           "annotate_run", "find_runs", "ingest_batch", "redactor_for", "with_trigger_ref"]


def find_runs(user: Viewer, query: str, tenant_slug: str | None = None,
              limit: int = 50) -> RunSearch:
    """Runs of the user's tenants matching a run_id, an agent_id or a trigger reference:
    exact, then prefix, then contains (``search.py``); a trigger reference matches only as
    the user sees it, strictly redacted as every face shows it (``shown_trigger_refs``)."""
    return search_runs(user, query, _shown_trigger(user), tenant_slug, limit)


def with_trigger_ref(user: Viewer, runs: QuerySet[Run], trigger_ref: str) -> QuerySet[Run]:
    """``runs`` started by ``trigger_ref`` as ``user`` sees the reference: a match on the
    stored value alone would confirm a guess of what the redaction hides in it."""
    shown = _shown_trigger(user)
    stored = runs.filter(trigger_ref=trigger_ref).order_by("-id").values_list(
        "pk", "tenant_id", "trigger_ref")[:TRIGGER_SCAN_LIMIT]
    return runs.filter(pk__in=[pk for pk, tenant_id, ref in stored
                               if shown(tenant_id, ref) == trigger_ref])


def _shown_trigger(user: Viewer) -> ShownTrigger:
    viewers = ViewersByTenant(user)

    def shown(tenant_id: int, trigger_ref: str) -> str:
        return as_text(viewers(tenant_id).redactor.redact(trigger_ref, "trigger_ref"))
    return shown


# What of each kind of record a reader sees only through redaction.
REDACTED_FIELDS = {
    "run": ("goal", "metadata", "trigger_ref"),
    "step": ("title", "metadata"),
    "model_call": ("messages", "response", "error", "request"),
    "tool_call": ("input", "output", "error", "tool_call_ref", "idempotency_key"),
    "annotation": ("body", "data"),
    "integrity_alarm": (),  # no agent content, but its heads hash some
    # what was received and not placed; a reason can quote it, a justification too
    "deferred_item": ("payload", "reason", "justification"),
}
# The role that lets a reader ask for each level; strict needs none.
LEVEL_ROLES = {"strict": None, "standard": Role.VIEW_CONFIDENTIAL, "none": Role.VIEW_UNREDACTED}


class RedactionNotAllowed(PermissionDenied):
    pass


@dataclass
class ViewerRedaction:
    """A reader's redaction on one tenant. Below ``none``, a row's hash columns are replaced by
    keyed commitments (``commitments.py``): a plain hash of the unredacted record would let
    the reader test guesses of what is hidden."""

    level: str
    redactor: Redactor
    tenant_id: int

    @cached_property
    def committer(self) -> Committer | None:
        """Made when first needed: most pages redact without showing a hash."""
        return None if self.level == "none" else committer_for(self.tenant_id)

    def redact_row(self, kind: str, row: dict[str, Any], commit: bool = True
                   ) -> dict[str, Any]:
        """``row`` as this reader sees it. ``commit=False``: for a face that shows no hashes
        (the timeline's rows), which are emptied without computing their commitments."""
        fields = REDACTED_FIELDS[kind]
        shown = self.redactor.redact_fields(row, fields, row.get("classifications"))
        if self.level == "none":
            if not HASH_FIELDS.keys().isdisjoint(shown):
                shown["commitment"] = None
            return shown
        if not commit:
            for column in HASH_FIELDS.keys() & shown.keys():
                shown[column] = None
            return shown
        committer = self.committer
        assert committer is not None  # below level none there always is one
        return committer.of_row(row, shown, fields)


def allowed_levels(user: Viewer, tenant_id: int) -> list[str]:
    allowed = ["strict"]
    if has_role(user, Role.VIEW_CONFIDENTIAL, tenant_id) or has_role(
            user, Role.VIEW_UNREDACTED, tenant_id):
        allowed.append("standard")
    if has_role(user, Role.VIEW_UNREDACTED, tenant_id):
        allowed.append("none")
    return allowed


def redactor_for(user: Viewer, tenant_id: int, requested: str | None = None,
                 viewing: str = "") -> ViewerRedaction:
    """The redaction a reader gets on one tenant: strict unless they ask for, and hold the
    role for, a lighter level. A lighter level is a disclosure: it is annotated in the
    tenant's governance log (who, ``viewing``: what and through which face, the level)
    before anything is shown."""
    level = requested or "strict"
    if level not in LEVELS:
        raise RedactionNotAllowed(f"unknown redaction level {level!r}; use one of "
                                  f"{', '.join(LEVELS)}")
    role = LEVEL_ROLES[level]
    if role is not None and level not in allowed_levels(user, tenant_id):
        raise RedactionNotAllowed(f"redaction level {level!r} needs the {role} role")
    if role is not None:
        record_disclosure(acting(user), tenant_id, level, viewing)
    rules = [TenantRule(pattern, label) for pattern, label in RedactionRule.objects.filter(
        tenant_id=tenant_id).values_list("pattern", "label")]
    return ViewerRedaction(level, Redactor(level, rules), tenant_id)


class ViewersByTenant:
    """One reader's redaction on each tenant of the rows at hand (a person may span several),
    made when first needed: ``viewers(tenant_id)``."""

    def __init__(self, user: Viewer, requested: str | None = None, viewing: str = "") -> None:
        self.user, self.requested, self.viewing = user, requested, viewing
        self._made: dict[int, ViewerRedaction] = {}

    def __call__(self, tenant_id: int) -> ViewerRedaction:
        viewer = self._made.get(tenant_id)
        if viewer is None:
            viewer = self._made[tenant_id] = redactor_for(self.user, tenant_id, self.requested,
                                                          viewing=self.viewing)
        return viewer


def shown_trigger_refs(user: Viewer, runs: list[Run]) -> list[Run]:
    """``runs`` with each trigger reference as a strict reader sees it (a reference can hold a
    secret): for display, never saved."""
    viewers = ViewersByTenant(user)
    for run in runs:
        shown = viewers(run.tenant_id).redactor.redact(run.trigger_ref, "trigger_ref")
        run.trigger_ref = as_text(shown)
    return runs


def record_disclosure(user: Actor, tenant_id: int, level: str, viewing: str) -> None:
    """Annotate that ``user`` read ``viewing`` of the tenant at ``level`` (below strict)."""
    from core.models import Tenant

    what = viewing or "ledger data"
    with transaction.atomic():
        annotate(Tenant.objects.get(pk=tenant_id), AnnotationKind.DISCLOSURE,
                 f"{user} viewed {what} at redaction level {level}", by=user,
                 data={"event": "viewed_below_strict", "level": level, "viewing": what})


# -- manual interventions ------------------------------------------------------------------------

# What a person records on a run (the runbook: "policy changes, approvals, overrides"); the
# other kinds are written by the portal's own services.
MANUAL_ANNOTATION_KINDS = (AnnotationKind.NOTE, AnnotationKind.CORRECTION,
                           AnnotationKind.MANUAL_OVERRIDE, AnnotationKind.MANUAL_POLICY_CHANGE,
                           AnnotationKind.MANUAL_APPROVAL)
# What a person asks for by the runbook's words; what is recorded is the hand-recorded kind,
# so nothing written by hand reads as a vote, a publication or an exception of the portal.
MANUAL_KIND_WORDS = {AnnotationKind.OVERRIDE.value: AnnotationKind.MANUAL_OVERRIDE,
                     AnnotationKind.POLICY_CHANGE.value: AnnotationKind.MANUAL_POLICY_CHANGE,
                     AnnotationKind.APPROVAL.value: AnnotationKind.MANUAL_APPROVAL}
# The same cap as an agent's own annotation (``AnnotationIn.body``), and as much again for data.
ANNOTATION_BODY_MAX = 20_000
ANNOTATION_DATA_MAX_BYTES = 20_000


class AnnotationRejected(ValidationError):
    """Nothing was written: the message says what to fix."""


def _checked_data(data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AnnotationRejected("data must be a JSON object")
    unsafe = unsafe_paths({"data": data})
    if unsafe:  # every face (API, CLI, timeline form) gets the same check, with the path
        raise AnnotationRejected("; ".join(f"{path}: {why}" for path, why in unsafe.items()))
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:
        raise AnnotationRejected(f"data is not plain JSON: {exc}") from None
    if len(encoded) > ANNOTATION_DATA_MAX_BYTES:
        raise AnnotationRejected(f"data is {len(encoded)} bytes of JSON; at most "
                                 f"{ANNOTATION_DATA_MAX_BYTES}")
    if b"\\u0000" in encoded:
        raise AnnotationRejected("data may not contain NUL characters")
    return data


@transaction.atomic
def annotate_run(run: Run, *, by: Actor, body: str, kind: str = AnnotationKind.NOTE,
                 data: dict[str, Any] | None = None, target_call_id: str = "") -> Annotation:
    """Record a manual intervention on ``run``: an annotation appended to the run's hash chain
    (closed or not), authored by ``by``, who needs the operate role on the run's tenant.

    Raises ``PermissionDenied`` without the role, ``AnnotationRejected`` for bad input and
    ``Run.DoesNotExist`` if the run was removed meanwhile; nothing is written then.
    """
    if not has_role(by, Role.OPERATE, run.tenant_id):
        raise PermissionDenied("annotating a run needs the operate role on its tenant")
    body = (body or "").strip()
    if not body:
        raise AnnotationRejected("an annotation needs a body (what was done, and why)")
    if len(body) > ANNOTATION_BODY_MAX:
        raise AnnotationRejected(f"the body is {len(body)} characters; at most "
                                 f"{ANNOTATION_BODY_MAX}")
    for path, why in unsafe_paths({"body": body}).items():
        raise AnnotationRejected(f"{path}: {why}")
    kind = MANUAL_KIND_WORDS.get(kind, kind)
    if kind not in MANUAL_ANNOTATION_KINDS:
        raise AnnotationRejected(f"unknown kind {kind!r}; use one of "
                                 f"{', '.join(MANUAL_ANNOTATION_KINDS)}")
    data = _checked_data(data)
    # Lock the run first: retention cannot remove it under us, and ``annotate`` (which would
    # fall back to the governance log for a missing run) appends to this very chain.
    locked = Run.objects.select_for_update(of=("self",)).select_related("tenant").get(
        pk=run.pk, tenant_id=run.tenant_id)
    target_call_id = (target_call_id or "").strip()
    if target_call_id and not ToolCall.objects.filter(
            tenant_id=locked.tenant_id, run=locked, call_id=target_call_id).exists():
        raise AnnotationRejected(f"no tool call {target_call_id!r} in run {locked.run_id}")
    return annotate(locked.tenant, kind, body, run_id=locked.run_id, data=data, by=by,
                    target_call_id=target_call_id)
