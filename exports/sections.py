"""What an export contains: a list of sections, one per record type, in the order they appear.

Each section streams its rows for one tenant and window, in primary-key order, between two
primary keys (a part's range), with a bounded number of rows in memory: ledger records through a
server-side cursor (PostgreSQL) or a streaming ``values()`` iterator, governance rows in keyset
pages. Every query filters on the export's tenant id. A new record type (incidents...) is one
more entry in :data:`SECTIONS`.

How each section is bounded by the window ``[from, to)``:

- ledger records (``run``, ``step``, ``model_call``, ``tool_call``, ``annotation``): the runs
  that started in the window, and every record of their chains;
- governance actions (``decision``, ``approval``, ``replay``, ``rollback``): by the moment they
  were made (their ``created_at``), whenever the run they concern started; ``replay_step``: the
  steps of those replays, all of them (a replay and its steps are never split between exports).
  A replay's decisions and its live-replay approval are made as it runs, so they land in the
  same export as the replay; the run a replay or rollback concerns is named by its ``run_id``
  (and ``call_id``) and may be in an earlier window's export, as a decision's run may;
- ``governed_exception``: those in force at any moment of the window;
- ``policy_version``: the versions the window's decisions, approvals and exceptions refer to,
  and the versions its replays were pinned to.

Redaction: the ledger content of each section (``Section.redacted``) goes through the shared
engine at the export's level. A replayed call's output and error are ledger content and are
redacted like the recorded tool call's, with that call's declared labels; each value of its
divergence (``recorded`` / ``replayed`` at a path of the output) is redacted as it would be in
place in the output. A rollback's outcome, remaining side effects, attempt log and last error
are what the compensate hook answered: redacted likewise (detectors and tenant rules).

Rows are plain JSON values (timestamps in the canonical text form), so that the same ledger
state always gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from django.db import connection, models, transaction
from django.db.models import F, Q, QuerySet

from approvals.models import ApprovalRequest, Vote
from core.canonical import canonical_timestamp
from core.db_routing import read_alias
from operations.models import Replay, ReplayStep, Rollback
from operations.replay_redaction import redact_divergence
from policies.models import Decision, GovernedException, PolicyVersion, Rule
from runs import integrity_fetch
from runs.commitments import Committer
from runs.models import Annotation, ModelCall, Run, Step, ToolCall
from runs.models.base import content_of, is_empty
from runs.redaction import Redactor
from runs.services import REDACTED_FIELDS

KEYSET_PAGE = 500
STREAM_CHUNK = 2000
# Ledger rows are read in keyset pages of this many, fetched as tuples (JSON as text) and
# parsed one row at a time as they are written: each page is one more query to plan (several
# milliseconds with its joins), so pages are large, but a page of tuples weighs little.
LEDGER_PAGE = 10_000


class Window(Protocol):
    tenant_id: int
    window_from: datetime
    window_to: datetime


@dataclass(frozen=True)
class Section:
    """One record type: its rows for a tenant and window, and which of their fields are seen
    only through redaction (``labels``: the field holding the agent's declared labels)."""

    name: str
    model: type[models.Model]
    queryset: Callable[[Window], QuerySet[Any]]
    rows: Callable[[Window, int, int], Iterator[dict[str, Any]]]
    redacted: tuple[str, ...]
    labels: str | None = None
    # Redaction beyond the named fields (a replayed call's divergence), after them.
    also_redact: Callable[[Redactor, dict[str, Any], Any], dict[str, Any]] | None = None

    def bounded(self, window: Window, after: int, upto: int) -> QuerySet[Any]:
        return self.queryset(window).filter(pk__gt=after, pk__lte=upto)

    def redact(self, redactor: Redactor, row: dict[str, Any],
               committer: Committer | None = None) -> dict[str, Any]:
        """The row as exported: its ledger content redacted by the shared engine, and its
        hashes as keyed commitments when there is a ``committer`` (a redacted export)."""
        labels = row.get(self.labels) if self.labels else None
        redacted = redactor.redact_fields(row, self.redacted, labels)
        if self.also_redact is not None:
            redacted = self.also_redact(redactor, redacted, labels)
        if committer is not None:
            redacted = committer.of_row(row, redacted, self.redacted)
        return redacted


def _ts(row: dict[str, Any], *names: str) -> None:
    for name in names:
        value = row.get(name)
        if isinstance(value, datetime):
            row[name] = canonical_timestamp(value)


# -- ledger records (the runs' chains) ----------------------------------------------------------

def _runs_in_window(window: Window) -> QuerySet[Any]:
    return Run.objects.filter(tenant_id=window.tenant_id, started_at__gte=window.window_from,
                              started_at__lt=window.window_to)


def _run_queryset(window: Window) -> QuerySet[Any]:
    return _runs_in_window(window)


def _record_queryset(model: type[models.Model]) -> Callable[[Window], QuerySet[Any]]:
    def queryset(window: Window) -> QuerySet[Any]:
        return model._default_manager.filter(
            tenant_id=window.tenant_id, run__in=_runs_in_window(window).values("pk"))
    return queryset


# The run's outcome (its tip) beside its content: status, end, last seq and head hash.
_RUN_OUTCOME = ("status", "ended_at", "last_seq", "head_hash")
_CHAIN = ("seq", "content_hash", "chain_hash")


def _ledger_rows(model: Any) -> Callable[[Window, int, int], Iterator[dict[str, Any]]]:
    outcome = _RUN_OUTCOME if model is Run else ()

    def rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
        if connection.vendor == "postgresql":
            stream = _postgres_rows(model, window, after, upto, outcome)
        else:
            stream = _orm_rows(model, window, after, upto, outcome)
        for row in stream:
            del row["pk"]
            yield row
    return rows


def _postgres_rows(model: Any, window: Window, after: int, upto: int,
                   outcome: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    """Through a server-side cursor, timestamps as canonical text and JSON for orjson
    (``runs.integrity_fetch``, the fast path ``ledger verify`` reads with)."""
    extras = {"pk": "t.id", **{name: f"t.{name}" for name in _CHAIN}}
    optional = model.optional_content_fields
    for name in outcome:
        extras[name] = (f"to_char(t.{name} AT TIME ZONE 'UTC', {integrity_fetch.CANONICAL_TS})"
                        if name == "ended_at" else f"t.{name}")
    in_window = "t.started_at >= %s AND t.started_at < %s"
    params: list[Any] = [window.tenant_id]
    if model is Run:
        where = f"t.tenant_id = %s AND {in_window}"
        params += [window.window_from, window.window_to]
    else:
        where = ("t.tenant_id = %s AND t.run_id IN (SELECT id FROM runs_run WHERE tenant_id = %s"
                 " AND started_at >= %s AND started_at < %s)")
        params += [window.tenant_id, window.window_from, window.window_to]
    where += " AND t.id > %s AND t.id <= %s"
    last = after
    while True:
        # Keyset pages, each read in its own short transaction through a server-side cursor:
        # no transaction stays open while the rows are written (the part's progress updates
        # must be visible as they happen), and never more than a page in memory.
        # from the read replica when the export part's job reads there (core/db_routing.py)
        using = read_alias()
        with transaction.atomic(using=using):
            names, json_at, page = integrity_fetch.fetch_page(
                model, extras, where, [*params, last, upto], f"t.id LIMIT {LEDGER_PAGE}", using)
        if not page:
            return
        last = page[-1][0]  # extras come first: "pk"
        for row in integrity_fetch.as_dicts(names, json_at, page):
            for name in optional:  # left out while empty, as in the content (``content_of``)
                if is_empty(row[name]):
                    del row[name]
            yield row
        del page


def _orm_rows(model: Any, window: Window, after: int, upto: int,
              outcome: tuple[str, ...]) -> Iterator[dict[str, Any]]:
    refs = {f"_{name}": F(path) for name, path in model.content_refs.items()}
    own = [n for n in model.content_fields if n not in model.content_refs]
    qs = (SECTION_BY_NAME[model.kind].bounded(window, after, upto).order_by("pk")
          .values("pk", *_CHAIN, *outcome, *own, **refs))
    for values in qs.iterator(chunk_size=STREAM_CHUNK):
        for name in model.content_refs:
            values[name] = values.pop(f"_{name}")
        row = content_of(model.kind, model.content_fields, values,
                         model.optional_content_fields)
        row.pop("kind")
        row["pk"] = values["pk"]
        for name in (*_CHAIN, *outcome):
            row[name] = values[name]
        _ts(row, "ended_at")
        yield row


# -- governance records: keyset pages ---------------------------------------------------------

def _keyset(qs: QuerySet[Any], after: int, upto: int, fields: dict[str, Any],
            enrich: Callable[[list[dict[str, Any]]], None] | None = None
            ) -> Iterator[dict[str, Any]]:
    """``values()`` rows of ``qs`` in pages of KEYSET_PAGE by primary key (never more in
    memory), the output names mapped to ORM paths."""
    plain = [name for name, path in fields.items() if name == path]
    aliased = {f"_{name}": F(path) for name, path in fields.items() if name != path}
    last = after
    while True:
        page = list(qs.filter(pk__gt=last, pk__lte=upto).order_by("pk")
                    .values("pk", *plain, **aliased)[:KEYSET_PAGE])
        if not page:
            return
        last = page[-1]["pk"]
        rows = [{(k[1:] if k[0] == "_" else k): v for k, v in values.items()} for values in page]
        for row in rows:
            _ts(row, *(k for k, v in row.items() if isinstance(v, datetime)))
        if enrich is not None:
            enrich(rows)
        yield from rows


def _made_in_window(model: type[models.Model]) -> Callable[[Window], QuerySet[Any]]:
    """Governance rows of the tenant made during the window (by their ``created_at``)."""
    def queryset(window: Window) -> QuerySet[Any]:
        return model._default_manager.filter(tenant_id=window.tenant_id,
                                             created_at__gte=window.window_from,
                                             created_at__lt=window.window_to)
    return queryset


_decision_queryset = _made_in_window(Decision)


DECISION_FIELDS = {
    "id": "pk", "run_id": "run_id", "call_id": "call_id", "agent_id": "agent_id",
    "tool": "tool", "action_class": "action_class", "mode": "mode", "input": "input",
    "effect": "effect", "reason": "reason", "policy": "policy_version__policy__name",
    "policy_version": "policy_version__number", "matched_rules": "matched_rules",
    "engine": "engine", "engine_answers": "engine_answers", "approval_id": "approval_id",
    "exception_id": "exception_id", "decided_by": "decided_by", "created_at": "created_at",
    "declared_action_class": "declared_action_class", "replay_id": "replay_id",
}


def _decision_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_decision_queryset(window), after, upto, DECISION_FIELDS)


_approval_queryset = _made_in_window(ApprovalRequest)


APPROVAL_FIELDS = {
    "id": "pk", "kind": "kind", "status": "status", "run_id": "run_id", "call_id": "call_id",
    "agent_id": "agent_id", "tool": "tool", "action_class": "action_class",
    "arguments": "arguments", "action_hash": "action_hash",
    "policy": "policy_version__policy__name", "policy_version": "policy_version__number",
    "matched_rules": "matched_rules", "requested_by": "requested_by",
    "approvals_needed": "approvals_needed", "due_at": "due_at", "escalated_at": "escalated_at",
    "created_at": "created_at", "decided_at": "decided_at",
    "policy_checksum": "policy_checksum", "consumed_by_decision": "consumed_by_id",
    "consumed_at": "consumed_at",
}


def _with_votes(rows: list[dict[str, Any]]) -> None:
    votes: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    vote: Any
    for vote in (Vote.objects.filter(request_id__in=list(votes))
                 .order_by("request_id", "pk")
                 .values("request_id", "approve", "justification", "created_at",
                         voter=F("approver__username"))):
        request_id = vote.pop("request_id")
        vote["approver"] = vote.pop("voter")
        _ts(vote, "created_at")
        votes[request_id].append(vote)
    for row in rows:
        row["votes"] = votes[row["id"]]


def _approval_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_approval_queryset(window), after, upto, APPROVAL_FIELDS, _with_votes)


def _exception_queryset(window: Window) -> QuerySet[Any]:
    # In force at any moment of the window.
    return GovernedException.objects.filter(tenant_id=window.tenant_id,
                                            starts_at__lt=window.window_to,
                                            ends_at__gte=window.window_from)


EXCEPTION_FIELDS = {
    "id": "pk", "tool": "tool", "agent_id": "agent_id", "action_class": "action_class",
    "policy": "policy_version__policy__name", "policy_version": "policy_version__number",
    "effect": "effect", "justification": "justification", "starts_at": "starts_at",
    "ends_at": "ends_at", "status": "status", "requested_by": "requested_by__username",
    "granted_by": "granted_by__username", "second_grantor": "second_grantor__username",
    "created_at": "created_at",
}


def _exception_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_exception_queryset(window), after, upto, EXCEPTION_FIELDS)


# -- replays and rollbacks: governance actions, bounded by when they were made ----------------

_replay_queryset = _made_in_window(Replay)


REPLAY_FIELDS = {
    "id": "pk", "run_id": "run__run_id", "mode": "mode", "until_step": "until_step",
    "policy": "policy_version__policy__name", "policy_version": "policy_version__number",
    "status": "status", "steps_total": "steps_total", "steps_done": "steps_done",
    "divergent_steps": "divergent_steps", "failure_reason": "failure_reason",
    "requested_by": "requested_by_label", "approval_id": "approval_id",
    "created_at": "created_at", "started_at": "started_at", "finished_at": "finished_at",
}


def _replay_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_replay_queryset(window), after, upto, REPLAY_FIELDS)


def _replay_step_queryset(window: Window) -> QuerySet[Any]:
    return ReplayStep.objects.filter(tenant_id=window.tenant_id,
                                     replay__in=_replay_queryset(window).values("pk"))


REPLAY_STEP_FIELDS = {
    "id": "pk", "replay_id": "replay_id", "seq": "seq", "run_id": "replay__run__run_id",
    "call_id": "call_id", "step_index": "step_index", "tool": "tool__name",
    "decision_id": "decision_id", "decision_effect": "decision__effect",
    "mode_used": "mode_used", "idempotency_key": "idempotency_key", "attempts": "attempts",
    "status": "status", "output": "output", "error": "error", "latency_ms": "latency_ms",
    "divergence": "divergence", "flagged": "flagged", "follow_up": "follow_up",
    "follow_up_note": "follow_up_note", "follow_up_by": "follow_up_by_label",
    "follow_up_at": "follow_up_at", "created_at": "created_at", "updated_at": "updated_at",
}


def _with_call_labels(tenant_id: int) -> Callable[[list[dict[str, Any]]], None]:
    """Each replayed step carries the labels its recorded call declared (``classifications``):
    its output, error and divergence are redacted with them, as the call's own are."""
    def enrich(rows: list[dict[str, Any]]) -> None:
        labels = dict(ToolCall.objects.filter(
            tenant_id=tenant_id, call_id__in={row["call_id"] for row in rows}).values_list(
            "call_id", "classifications"))
        for row in rows:
            row["classifications"] = labels.get(row["call_id"]) or {}
    return enrich


def _replay_step_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_replay_step_queryset(window), after, upto, REPLAY_STEP_FIELDS,
                   _with_call_labels(window.tenant_id))


def _redact_divergence(redactor: Redactor, row: dict[str, Any], labels: Any) -> dict[str, Any]:
    if "divergence" in row:
        row["divergence"] = redact_divergence(redactor, labels, row["divergence"])
    return row


_rollback_queryset = _made_in_window(Rollback)


ROLLBACK_FIELDS = {
    "id": "pk", "run_id": "run__run_id", "call_id": "tool_call__call_id",
    "tool": "tool_call__tool__name", "status": "status", "idempotency_key": "idempotency_key",
    "attempts": "attempts", "attempt_log": "attempt_log", "outcome": "outcome",
    "remaining_side_effects": "remaining_side_effects", "last_error": "last_error",
    "requested_by": "requested_by_label", "incident_id": "incident_id", "batch": "batch",
    "position": "position", "created_at": "created_at", "started_at": "started_at",
    "finished_at": "finished_at",
}


def _rollback_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_rollback_queryset(window), after, upto, ROLLBACK_FIELDS)


# -- the policy versions referenced -----------------------------------------------------------

def _policy_version_queryset(window: Window) -> QuerySet[Any]:
    """The versions the window's decisions, approvals and exceptions refer to, and those its
    replays were pinned to."""
    referenced = (Q(pk__in=_decision_queryset(window).values("policy_version_id"))
                  | Q(pk__in=_approval_queryset(window).values("policy_version_id"))
                  | Q(pk__in=_exception_queryset(window).values("policy_version_id"))
                  | Q(pk__in=_replay_queryset(window).exclude(policy_version=None)
                      .values("policy_version_id")))
    return PolicyVersion.objects.filter(referenced, tenant_id=window.tenant_id)


POLICY_VERSION_FIELDS = {
    "id": "pk", "policy": "policy__name", "number": "number", "status": "status",
    "default_effect": "default_effect", "change_note": "change_note",
    "author": "author__username", "publisher": "publisher__username",
    "created_at": "created_at", "published_at": "published_at", "retired_at": "retired_at",
    "checksum": "checksum",
}


def _with_rules(rows: list[dict[str, Any]]) -> None:
    rules: dict[int, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
    for rule in Rule.objects.filter(version_id__in=list(rules)).order_by(
            "version_id", "position", "pk"):
        rules[rule.version_id].append(rule.as_dict())
    for row in rows:
        row["rules"] = rules[row["id"]]


def _policy_version_rows(window: Window, after: int, upto: int) -> Iterator[dict[str, Any]]:
    return _keyset(_policy_version_queryset(window), after, upto, POLICY_VERSION_FIELDS,
                   _with_rules)


def _ledger(model: Any) -> Section:
    return Section(model.kind, model, _run_queryset if model is Run else _record_queryset(model),
                   _ledger_rows(model), REDACTED_FIELDS[model.kind],
                   "classifications" if "classifications" in model.content_fields else None)


SECTIONS: tuple[Section, ...] = (
    _ledger(Run),
    _ledger(Step),
    _ledger(ModelCall),
    _ledger(ToolCall),
    # Annotations carry the manual interventions in the runs' chains: approvals, overrides,
    # rollbacks and replays asked for, run status changes, incident links.
    _ledger(Annotation),
    Section("decision", Decision, _decision_queryset, _decision_rows,
            ("input", "reason", "decided_by")),
    Section("approval", ApprovalRequest, _approval_queryset, _approval_rows,
            ("arguments", "requested_by", "votes")),
    Section("governed_exception", GovernedException, _exception_queryset, _exception_rows,
            ("justification",)),
    # Replays and rollbacks as records: the job, its outcome, and (replays) each replayed call.
    Section("replay", Replay, _replay_queryset, _replay_rows,
            ("failure_reason", "requested_by")),
    Section("replay_step", ReplayStep, _replay_step_queryset, _replay_step_rows,
            ("output", "error", "follow_up_note", "follow_up_by"), labels="classifications",
            also_redact=_redact_divergence),
    Section("rollback", Rollback, _rollback_queryset, _rollback_rows,
            ("outcome", "remaining_side_effects", "attempt_log", "last_error",
             "requested_by")),
    # Last: the versions every section above refers to.
    Section("policy_version", PolicyVersion, _policy_version_queryset, _policy_version_rows,
            ("change_note",)),
)
SECTION_BY_NAME: dict[str, Section] = {section.name: section for section in SECTIONS}
