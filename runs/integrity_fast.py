"""``ledger verify``'s pass over the chains on PostgreSQL: prove each run intact in as little
Python per record as there can be, and hand any run that is not to ``integrity._check_run``,
which names its first broken link.

Per record, PostgreSQL builds the record's content as one JSON object (``json_build_object``:
the content fields under their names, the references joined, timestamps already in the
canonical text form, the JSON columns embedded as they are stored) and Python does
``orjson.loads``, drops an empty optional field, ``canonical_json`` (``orjson.dumps`` with sorted
keys) and sha256: no model instance, no per-field dict building. The bytes are the ones
``content_of`` + ``canonical_json`` give for the same row (``tests/runs/
test_fast_verify_canonical.py`` compares them over adversarial JSON), with two exceptions where
this path is stricter: an integer beyond 64 bits (``orjson.loads`` would read it as a float;
``canonical_json`` cannot encode it, so no ingested record holds one) and a non-finite number
(``json.loads`` reads ``1e400`` as ``inf``, which ``canonical_json`` writes as ``null``) both
make the record's content unverifiable: a ``modified`` break, never a match.

A run is intact when its own hashes check, its records hold exactly the seqs 1..``last_seq``
once each, every record's content hash recomputes and every stored link is
``chain_hash(previous stored link, seq, content hash)`` (by induction, the chain recomputed from
the run), the head is the last link, the closing record agrees with the run's status and every
head a digest signed is the stored link at its seq. That is what ``_check_run`` walks, checked
without walking it; a run failing any of it is refetched and walked by ``_check_run`` for the
diagnosis (and if that finds nothing, the reason found here is the break: never fewer breaks
than the walk).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import orjson
from django.db import connection, models

from core.canonical import GENESIS, canonical_json

if TYPE_CHECKING:
    from core.models import Tenant

    from .integrity import Break, Scope, SignedHeads, VerifyReport

ITERSIZE = 5000
CANONICAL_TS = "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'"
#: In canonical bytes, a float of 1e16 or more: ``orjson.loads`` reads an integer beyond 64 bits
#: as such a float, which ``orjson.dumps`` writes with an exponent (``1.8446744073709552e+19``,
#: ``-9.223372036854776e+18``). Bytes holding this (most of them because of a real float or a
#: string) are computed again the exact, slow way. (A search of the text for 19 digits in a row
#: was a third of the pass.)
_BIG = b"e+"
#: A record whose content cannot be canonicalised hashes as this: it matches no stored hash.
UNVERIFIABLE = "unverifiable content"
_SORT = orjson.OPT_SORT_KEYS
_loads, _dumps, _sha256 = orjson.loads, orjson.dumps, hashlib.sha256


def content_columns(model: type[models.Model]) -> tuple[list[tuple[str, str, Any]], list[str]]:
    """Each content field of ``model`` as (name, its SQL over the record as ``t``, the model
    field or None for a reference), timestamps already in canonical text; and the joins the
    references need. Built from model metadata only (quoted names)."""
    qn = connection.ops.quote_name
    columns: list[tuple[str, str, Any]] = []
    joins: list[str] = []
    refs: dict[str, str] = model.content_refs  # type: ignore[attr-defined]
    for name in model.content_fields:  # type: ignore[attr-defined]
        path = refs.get(name)
        if path is None:
            field: Any = model._meta.get_field(name)
            column = f"t.{qn(field.column)}"
            if isinstance(field, models.DateTimeField):
                column = f"to_char({column} AT TIME ZONE 'UTC', {CANONICAL_TS})"
            columns.append((name, column, field))
            continue
        fk_name, attr = path.split("__")
        fk: Any = model._meta.get_field(fk_name)
        related: Any = fk.related_model
        alias = f"j{len(joins)}"
        joins.append(f"LEFT JOIN {qn(related._meta.db_table)} {alias} "
                     f"ON {alias}.id = t.{qn(fk.column)}")
        columns.append((name, f"{alias}.{qn(related._meta.get_field(attr).column)}", None))
    return columns, joins


def content_sql(model: type[models.Model]) -> tuple[str, str]:
    """The SQL expression of ``model``'s canonical content as JSON text (what ``content_of``
    builds from the row, keys unsorted, optional fields always present) and the FROM clause
    (the record as ``t``, its references joined)."""
    qn = connection.ops.quote_name
    kind: str = model.kind  # type: ignore[attr-defined]
    if not kind.replace("_", "").isalnum():
        raise ValueError(f"unexpected kind {kind!r}")
    pairs = [f"'kind', '{kind}'"]
    columns, joins = content_columns(model)
    for name, column, _ in columns:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unexpected field {name!r}")
        pairs.append(f"'{name}', {column}")
    # json_build_object takes at most 100 arguments; the widest record has 17 fields.
    # Built from model metadata only (checked names, quoted columns); values are bound.
    expression = f"json_build_object({', '.join(pairs)})::text"
    return expression, f"{qn(model._meta.db_table)} t {' '.join(joins)}"


class Unreadable:
    """A JSON value no ingested record can hold (``canonical_json`` refuses to write it)."""

    def __repr__(self) -> str:
        return "<unreadable JSON>"


UNREADABLE = Unreadable()


def _finite(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{literal} is not a finite number")
    return value


def loads_exact(text: str) -> Any:
    """A JSON column as ``canonical_json`` must see it: integers of any size kept exact (so
    one past 64 bits cannot be written, as at ingestion) and a non-finite number, or text
    that is not JSON, as :data:`UNREADABLE` (which cannot be written either)."""
    try:
        value = _loads(text)
        if _BIG not in _dumps(value):
            return value
        return json.loads(text, parse_float=_finite)
    except ValueError:  # orjson.JSONDecodeError is one
        return UNREADABLE


def canonical_from_text(text: str, optional: tuple[str, ...]) -> bytes | None:
    """The canonical bytes of a record's content from its JSON text (``content_sql``), or None
    when it cannot have been hashed by ingestion (an integer beyond 64 bits, a non-finite
    number, text that is not JSON)."""
    content = loads_exact(text)
    if content is UNREADABLE:
        return None
    for name in optional:
        value = content[name]
        if value is None or value == "":
            del content[name]
    try:
        return canonical_json(content)
    except TypeError:  # an integer beyond 64 bits (orjson.JSONEncodeError is a TypeError)
        return None


def content_hash_exact(text: str, optional: tuple[str, ...]) -> str:
    """The content hash from a record's JSON text, the exact (slow) way."""
    body = canonical_from_text(text, optional)
    return UNVERIFIABLE if body is None else _sha256(body).hexdigest()


def content_hash_of_text(text: str, optional: tuple[str, ...]) -> str:
    """``content_hash_exact`` in one ``orjson.loads`` and one sorted ``orjson.dumps`` when the
    canonical bytes hold no exponent (:data:`_BIG`), which is what makes the exact way's answer
    differ: an integer past 64 bits read as a float. ``e+`` is in the sorted bytes exactly when
    it is in the unsorted ones ``loads_exact`` tests (it occurs only inside a number or a
    string, which sorting moves whole), and an optional field dropped holds none."""
    try:
        content = _loads(text)
    except ValueError:  # orjson.JSONDecodeError: not JSON, or 1e400 and the like
        return UNVERIFIABLE
    for name in optional:
        value = content[name]
        if value is None or value == "":
            del content[name]
    body = _dumps(content, option=_SORT)
    if _BIG in body:
        return content_hash_exact(text, optional)
    return _sha256(body).hexdigest()


def _rows(name: str, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
    with connection.cursor() as wrapper:
        cursor = wrapper.cursor.connection.cursor(name=name)
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(ITERSIZE):
                yield from rows
        finally:
            cursor.close()


def rows_fetched_ahead(name: str, sql: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
    """``_rows`` with the next chunk fetched while the caller works on this one: psycopg waits
    for PostgreSQL without holding the GIL, so the database building the next rows and Python
    hashing these overlap, a core each, where ``_rows`` takes turns."""
    with connection.cursor() as wrapper, ThreadPoolExecutor(
            1, thread_name_prefix="fetch-ahead") as pool:
        cursor = wrapper.cursor.connection.cursor(name=name)
        pending: Future[list[tuple[Any, ...]]] | None = None
        try:
            cursor.execute(sql, params)
            pending = pool.submit(cursor.fetchmany, ITERSIZE)
            while rows := pending.result():
                pending = pool.submit(cursor.fetchmany, ITERSIZE)
                yield from rows
        finally:
            if pending is not None and not pending.done():
                # Left early (the caller stopped): the fetch in flight ends before the close.
                with contextlib.suppress(Exception):
                    pending.result()
            cursor.close()


#: per record, what the chain check needs: (seq, content hash recomputed, stored content hash,
#: stored chain hash)
Entry = tuple[int, str, str, str]


def _record_groups(model: type[models.Model], where: str, params: list[Any]
                   ) -> Iterator[tuple[int, list[Entry], tuple[int, Any] | None]]:
    """Per run (in run pk order): its pk, the entries of its ``model`` records and, for
    annotations, the last closing record (seq, data)."""
    sql = records_sql(model, where)
    optional = tuple(sorted(model.optional_content_fields))  # type: ignore[attr-defined]
    closing_kind = '"annotation_kind":"run_status"' if model.kind == "annotation" else None  # type: ignore[attr-defined]
    loads, dumps, sha256, big = _loads, _dumps, _sha256, _BIG
    for run_pk, rows in groupby(_rows(f"fast_{model._meta.model_name}", sql, params),
                                itemgetter(0)):
        entries: list[Entry] = []
        closing = None
        for _, seq, stored, link, text in rows:
            try:
                content = loads(text)
            except orjson.JSONDecodeError:  # 1e400 and the like
                entries.append((seq, UNVERIFIABLE, stored, link))
                continue
            for name in optional:
                value = content[name]
                if value is None or value == "":
                    del content[name]
            body = dumps(content, option=_SORT)
            digest = sha256(body).hexdigest() if big not in body else \
                content_hash_exact(text, optional)
            if closing_kind is not None and content["annotation_kind"] == "run_status":
                closing = (seq, content["data"])
            entries.append((seq, digest, stored, link))
        yield run_pk, entries, closing


def _run_rows(where: str, params: list[Any]) -> Iterator[tuple[Any, ...]]:
    return _rows("fast_run", runs_sql(where), params)


def records_sql(model: type[models.Model], where: str) -> str:
    """The records of ``model`` this pass reads, in run and seq order: (run pk, seq, stored
    content hash, stored chain link, content as JSON text). ``where`` is over the record as
    ``t``."""
    expression, source = content_sql(model)
    return (f"SELECT t.run_id, t.seq, t.content_hash, t.chain_hash, {expression} "  # noqa: S608
            f"FROM {source} WHERE {where} ORDER BY t.run_id, t.seq")


def runs_sql(where: str) -> str:
    """The run rows this pass reads, in pk order, with their own content as JSON text."""
    from .models import Run

    expression, source = content_sql(Run)
    return (f"SELECT t.id, t.run_id, t.content_hash, t.chain_hash, t.last_seq, "  # noqa: S608
            f"t.head_hash, t.status, t.ended_at, {expression} FROM {source} WHERE {where} "
            "ORDER BY t.id")


def chain_problem(run: dict[str, Any], entries: list[Entry], closing: tuple[int, Any] | None,
                  signed: list[tuple[int, str, int]], own_hash: str) -> str | None:
    """Why the run is not proven intact (None: it is). ``entries`` are its records'."""
    from .integrity import _end_differs
    from .models import AnnotationKind

    if own_hash != run["content_hash"]:
        return "the run record's content was changed"
    if _sha256(f"{GENESIS}:0:{own_hash}".encode()).hexdigest() != run["chain_hash"]:
        return "the run record's chain hash was changed"
    entries.sort()
    last_seq = run["last_seq"]
    if len(entries) != last_seq or (entries and (entries[0][0] != 1
                                                 or entries[-1][0] != last_seq)):
        return (f"its records do not hold seqs 1..{last_seq} once each "
                f"({len(entries)} records, seqs {entries[0][0] if entries else '-'}.."
                f"{entries[-1][0] if entries else '-'})")
    link = run["chain_hash"]
    links = [link]
    expected_seq = 1
    for seq, digest, stored, stored_link in entries:
        if seq != expected_seq:
            return f"seq {expected_seq} is held by {seq}: a gap or a duplicate"
        if digest != stored:
            return f"the content at seq {seq} was changed"
        if _sha256(f"{link}:{seq}:{stored}".encode()).hexdigest() != stored_link:
            return f"the chain link at seq {seq} was changed"
        link = stored_link
        links.append(link)
        expected_seq += 1
    if link != run["head_hash"]:
        return "the run's head hash does not match its last record"
    records = [] if closing is None else [("annotation", {
        "annotation_kind": AnnotationKind.RUN_STATUS, "seq": closing[0], "data": closing[1]})]
    ended = _end_differs(run, records)
    if ended is not None:
        return ended
    for signed_seq, signed_head, number in signed:
        if signed_seq > last_seq or links[signed_seq] != signed_head:
            return f"the chain at seq {signed_seq} is not what digest #{number} signed"
    return None


def verify_scope(tenant: Tenant, scope: Scope, signed: SignedHeads, report: VerifyReport,
                 progress: Callable[[int], None] | None = None) -> VerifyReport:
    """``integrity.verify_scope`` on PostgreSQL (in the caller's transaction)."""
    from .integrity import RECORD_MODELS, _run_conditions

    conditions, params = _run_conditions(scope, "")
    where = f"t.run_id IN (SELECT id FROM runs_run WHERE {conditions})"  # noqa: S608
    streams = [_record_groups(model, where, params) for model in RECORD_MODELS]
    pending: list[Any] = [next(stream, None) for stream in streams]
    run_where, run_params = _run_conditions(scope, "t.")
    run_optional = ()
    for pk, run_id, content, link, last_seq, head, status, ended_at, text in _run_rows(
            run_where, run_params):
        entries: list[Entry] = []
        closing = None
        for i, stream in enumerate(streams):
            group = pending[i]
            if group is not None and group[0] == pk:
                entries += group[1]
                if group[2] is not None:
                    closing = group[2]
                pending[i] = next(stream, None)
        run = {"id": pk, "run_id": run_id, "content_hash": content, "chain_hash": link,
               "last_seq": last_seq, "head_hash": head, "status": status,
               "ended_at": ended_at}
        report.runs += 1
        report.records += len(entries) + 1
        problem = chain_problem(run, entries, closing, signed.get(run_id, []),
                                content_hash_of_text(text, run_optional))
        if problem is not None:
            report.breaks.append(_diagnose(tenant, scope, run_id, signed, problem))
        if progress and report.runs % 500 == 0:
            progress(report.runs)
    if progress:
        progress(report.runs)
    return report


def _diagnose(tenant: Tenant, scope: Scope, run_id: str, signed: SignedHeads,
              problem: str) -> Break:
    """The first broken link of a run the fast check could not prove intact, named by the
    walk in ``integrity._check_run`` (or ``problem`` if the walk finds nothing)."""
    from dataclasses import replace

    from .integrity import Break, _check_run, _record_stream, _run_rows

    one = replace(scope, run_id=run_id, pk_range=None)
    run = next(_run_rows(tenant, one))
    records = [(kind, row) for _, _, kind, row in _record_stream(tenant, one)]
    found = _check_run(run, records, signed.get(run_id, []))
    return found if found is not None else Break(run_id, None, "modified", problem)
