"""What the read API returns for each ledger record, as ``values()`` rows.

Building plain dicts from ``values()`` keeps a 1,000-call timeline well inside its time budget;
the serializers in ``serializers.py`` document the same shapes for the OpenAPI schema (a test
keeps the two in step).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
from django.db.models import F, QuerySet

# output name -> ORM path
RUN_FIELDS = {
    "run_id": "run_id", "tenant": "tenant__slug", "agent_id": "agent__agent_id",
    "goal": "goal", "trigger_ref": "trigger_ref", "status": "status",
    "started_at": "started_at", "ended_at": "ended_at", "replay_of": "replay_of__run_id",
    "metadata": "metadata", "last_seq": "last_seq", "head_hash": "head_hash",
    "recorded_at": "recorded_at",
}
STEP_FIELDS = {
    "seq": "seq", "step_id": "step_id", "index": "index", "title": "title", "status": "status",
    "started_at": "started_at", "ended_at": "ended_at", "metadata": "metadata",
    "content_hash": "content_hash", "chain_hash": "chain_hash",
}
MODEL_CALL_FIELDS = {
    "seq": "seq", "call_id": "call_id", "step_id": "step__step_id", "provider": "provider",
    "model": "model", "messages": "messages", "response": "response", "request": "request",
    "input_tokens": "input_tokens", "output_tokens": "output_tokens", "latency_ms": "latency_ms",
    "started_at": "started_at", "ended_at": "ended_at", "error": "error",
    "classifications": "classifications", "content_hash": "content_hash",
    "chain_hash": "chain_hash",
}
TOOL_CALL_FIELDS = {
    "seq": "seq", "call_id": "call_id", "run_id": "run__run_id", "step_id": "step__step_id",
    "tool": "tool__name", "action_class": "action_class", "input": "input", "output": "output",
    "status": "status", "error": "error", "attempt": "attempt", "retry_of": "retry_of__call_id",
    "started_at": "started_at", "ended_at": "ended_at", "duration_ms": "duration_ms",
    "idempotency_key": "idempotency_key", "supports_rollback": "supports_rollback",
    "classifications": "classifications", "tool_call_ref": "tool_call_ref",
    "content_hash": "content_hash", "chain_hash": "chain_hash",
}
ANNOTATION_FIELDS = {
    "seq": "seq", "annotation_id": "annotation_id", "annotation_kind": "annotation_kind",
    "target_call_id": "target_call_id", "body": "body", "data": "data",
    "author_label": "author_label", "recorded_at": "recorded_at",
    "content_hash": "content_hash", "chain_hash": "chain_hash",
}
AGENT_FIELDS = {
    "agent_id": "agent_id", "tenant": "tenant__slug", "name": "name",
    "description": "description", "created_at": "created_at",
}
TENANT_FIELDS = {"slug": "slug", "name": "name", "outage_mode": "outage_mode"}
INTEGRITY_ALARM_FIELDS = {
    "tenant": "tenant__slug", "run_id": "run_id", "seq": "seq", "found_head": "found_head",
    "signed_seq": "signed_seq", "signed_head": "signed_head",
    "digest_number": "digest_number", "detail": "detail", "raised_at": "raised_at",
}


def values_of(qs: QuerySet[Any], fields: dict[str, str], *extra: str) -> QuerySet[Any]:
    """``qs.values()`` under the output names (which may clash with model field names, such as
    ``tenant`` or ``run_id``, so related values are fetched under an alias and renamed)."""
    plain = [name for name, path in fields.items() if name == path]
    aliased = {f"_{name}": F(path) for name, path in fields.items() if name != path}
    return qs.values(*plain, *extra, **aliased)


def renamed(rows: Any) -> list[dict[str, Any]]:
    """Rows of ``values_of`` with their aliases turned back into output names."""
    return [{(k[1:] if k[0] == "_" else k): v for k, v in row.items()} for row in rows]


def record_parts() -> tuple[tuple[str, Any, dict[str, str]], ...]:
    """(kind, model, fields) of each table a run's records live in."""
    from ..models import Annotation, ModelCall, Step, ToolCall

    return (("step", Step, STEP_FIELDS), ("model_call", ModelCall, MODEL_CALL_FIELDS),
            ("tool_call", ToolCall, TOOL_CALL_FIELDS),
            ("annotation", Annotation, ANNOTATION_FIELDS))


def _loads(text: str | bytes) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # what orjson refuses and json takes: integers > 64 bits
        return json.loads(text)


def fetched_renamed(rows: QuerySet[Any]) -> list[dict[str, Any]]:
    """``renamed(list(rows))`` for the rows of a ``values_of`` queryset, fetched faster on
    PostgreSQL: the same SQL (the ORM compiles it, the tenant scope included), but read with
    psycopg's C timestamp loader and ``orjson`` for JSON instead of Django's pure-Python
    timestamp loader and a ``json.loads`` per JSON value, which were most of the fetch of a
    2,000-record timeline (bench/timeline_page.py, bench/run_detail.py). The values are equal
    (timestamps in UTC either way), and each row is made under its output name at once
    rather than renamed in a second pass; other databases take the ORM's path."""
    from django.db import connections

    connection = connections[rows.db]
    if connection.vendor != "postgresql":
        return renamed(rows)
    from psycopg import adapters as default_adapters
    from psycopg.pq import Format
    from psycopg.types.json import set_json_loads

    sql, params = rows.query.get_compiler(rows.db).as_sql()
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor
        # on this cursor only: the connection keeps Django's loaders
        cursor.adapters.register_loader(
            "timestamptz", default_adapters.get_loader(
                default_adapters.types["timestamptz"].oid, Format.TEXT))
        set_json_loads(_loads, cursor)
        wrapper.execute(sql, params)
        names = [name[1:] if name[0] == "_" else name
                 for name in (column.name for column in cursor.description)]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


#: Fields naming another record by its external id: (field, the kind of record named).
#: ``timeline_of`` resolves them from the run's own rows instead of joining: on PostgreSQL a
#: join to a record table by id probes every month's partition for each row (a 1,000-call run
#: made 17,000 index probes at ten million records, 45 ms of its 130).
_REFERENCES = {"model_call": (("step_id", "step"),),
               "tool_call": (("step_id", "step"), ("retry_of", "tool_call"))}


def timeline_of(run_pk: int, tenant_id: int, after: int = 0, limit: int | None = None
                ) -> list[dict[str, Any]]:
    """The records of a run in chain order, each tagged with its ``kind``: four queries.

    ``after``/``limit``: a keyset page, the first ``limit`` records with a ``seq`` above
    ``after`` (each table's ``(run, seq)`` unique index serves it; no table gives more than
    ``limit`` rows, so a page costs the same at the start of a 100,000-record run as at its
    end)."""
    timeline: list[dict[str, Any]] = []
    names: dict[str, dict[int, str]] = {"step": {}, "tool_call": {}}  # pk -> external id
    for kind, model, fields in record_parts():
        references = _REFERENCES.get(kind, ())
        # the key itself (``step``'s column, not ``step__step_id``), named below
        fields = {**fields, **{name: name.removesuffix("_id") for name, _ in references}}
        qs = model.objects.filter(run_id=run_pk, tenant_id=tenant_id)
        if after:
            qs = qs.filter(seq__gt=after)
        rows = values_of(qs, fields, *(("id",) if kind in names else ()))
        if limit is not None:
            rows = rows.order_by("seq")[:limit]
        for row in fetched_renamed(rows):
            row["kind"] = kind
            if kind in names:
                names[kind][row.pop("id")] = row[_ID_FIELD[kind]]
            timeline.append(row)
    _name_references(timeline, names, tenant_id)
    timeline.sort(key=lambda row: row["seq"])
    return timeline if limit is None else timeline[:limit]


_ID_FIELD = {"step": "step_id", "tool_call": "call_id"}


def _name_references(timeline: list[dict[str, Any]], names: dict[str, dict[int, str]],
                     tenant_id: int) -> None:
    """Replace each reference's key by the external id of the record it names: from the rows
    at hand, else (a record outside the page, or of another run) one query per kind."""
    from ..models import Step, ToolCall

    missing: dict[str, set[int]] = {"step": set(), "tool_call": set()}
    for row in timeline:
        for field, kind in _REFERENCES.get(row["kind"], ()):
            if row[field] is not None and row[field] not in names[kind]:
                missing[kind].add(row[field])
    for kind, model in (("step", Step), ("tool_call", ToolCall)):
        if missing[kind]:
            names[kind].update(model.objects.filter(tenant_id=tenant_id, pk__in=missing[kind])
                               .values_list("pk", _ID_FIELD[kind]))
    for row in timeline:
        for field, kind in _REFERENCES.get(row["kind"], ()):
            if row[field] is not None:
                row[field] = names[kind].get(row[field])


#: ``source(tenant_id, call_ids, run_id)`` -> call_id -> decisions, for the calls of one tenant
#: (and, given a run_id, that run's decisions about calls never recorded): what governance
#: decided about each call before it ran. Governance registers its policy trail
#: (``policies.trail``) from its ``AppConfig.ready``; without it the ledger shows no decisions.
DecisionSource = Callable[[int, list[str], str], dict[str, list[dict[str, Any]]]]
_decision_sources: list[DecisionSource] = []


def register_decision_source(source: DecisionSource) -> None:
    if source not in _decision_sources:
        _decision_sources.append(source)


def decisions_of(tenant_id: int, call_ids: list[str], run_id: str = ""
                 ) -> dict[str, list[dict[str, Any]]]:
    """The policy trail of these calls: call_id -> decisions, oldest first; with ``run_id``,
    also the run's decisions about calls that were never recorded (under their call_id)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for source in _decision_sources:
        for call_id, decisions in source(tenant_id, call_ids, run_id).items():
            found.setdefault(call_id, []).extend(decisions)
    return found
