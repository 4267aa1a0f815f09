"""``ledger verify``'s pass over the chains on PostgreSQL: prove each run intact in as little
Python per record as there can be, and hand any run that is not to ``integrity._check_run``,
which names its first broken link.

Per record, PostgreSQL hands over the content fields as columns (the references joined,
timestamps already in the canonical text form, the JSON columns as their stored text) and
Python does one ``orjson.loads`` a JSON column, drops an empty optional field, ``canonical_json``
(``orjson.dumps`` with sorted keys) and sha256 (:class:`ColumnContent`): no model instance, no
per-field conversion. The bytes are the ones ``content_of`` + ``canonical_json`` give for the
same row (``tests/runs/test_fast_verify_canonical.py`` compares them over adversarial JSON), with
two exceptions where this path is stricter: an integer beyond 64 bits (``orjson.loads`` would
read it as a float; ``canonical_json`` cannot encode it, so no ingested record holds one) and a
non-finite number (``json.loads`` reads ``1e400`` as ``inf``, which ``canonical_json`` writes as
``null``) both make the record's content unverifiable: a ``modified`` break, never a match.

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


def content_select(model: type[models.Model]) -> tuple[list[str], ColumnContent, str]:
    """The SQL of each of ``model``'s content fields (over the record as ``t``; timestamps in
    canonical text, JSON columns as their text), how to hash what they read
    (:class:`ColumnContent`) and the FROM clause (the record as ``t``, its references joined)."""
    qn = connection.ops.quote_name
    kind: str = model.kind  # type: ignore[attr-defined]
    columns, joins = content_columns(model)
    sql: list[str] = []
    json_at: list[int] = []
    for position, (_, column, field) in enumerate(columns):
        if isinstance(field, models.JSONField):
            column = f"{column}::text"
            json_at.append(position)
        sql.append(column)
    content = ColumnContent(kind, tuple(name for name, _, _ in columns), tuple(json_at),
                            tuple(sorted(model.optional_content_fields)))  # type: ignore[attr-defined]
    return sql, content, f"{qn(model._meta.db_table)} t {' '.join(joins)}"


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


class ColumnContent:
    """A record's canonical content from its content fields read as columns (the JSON ones as
    text), hashed to exactly what ``content_of`` + ``canonical_json`` give for the row.

    Columns, not one ``json_build_object`` per record: PostgreSQL building that object was
    most of a pass (about 16 us a record, two thirds of ``ledger verify`` in one process);
    psycopg hands the columns over for a fraction of it. Per record: one ``orjson.loads`` a
    JSON column, one sorted ``orjson.dumps``, sha256; the JSON columns are read again the exact
    way (:func:`loads_exact`) only when the canonical bytes hold an exponent (:data:`_BIG`),
    the one sign that an integer past 64 bits was read as a float: ``e+`` is in the sorted
    bytes exactly when it is in a column's own (it occurs only inside a number or a string,
    which sorting moves whole), and an optional field dropped holds none."""

    __slots__ = ("json_at", "kind", "names", "optional")

    def __init__(self, kind: str, names: tuple[str, ...], json_at: tuple[int, ...],
                 optional: tuple[str, ...] = ()) -> None:
        self.kind = kind  # the content's "kind" (a field named "kind" replaces it)
        self.names = names
        self.json_at = json_at
        self.optional = optional  # left out while empty, as content_of leaves them out

    def _content(self, values: tuple[Any, ...] | list[Any],
                 loads: Callable[[str], Any]) -> dict[str, Any] | None:
        content: dict[str, Any] = {"kind": self.kind}
        content.update(zip(self.names, values, strict=True))
        names = self.names
        for position in self.json_at:
            text = values[position]
            if text is not None:
                try:
                    value = loads(text)
                except ValueError:  # orjson.JSONDecodeError: not JSON, or 1e400 and the like
                    return None
                if value is UNREADABLE:
                    return None
                content[names[position]] = value
        for name in self.optional:
            value = content[name]
            if value is None or value == "":
                del content[name]
        return content

    def content(self, values: tuple[Any, ...] | list[Any]) -> dict[str, Any] | None:
        """The content as the quick way reads it (None: its JSON cannot be read)."""
        return self._content(values, _loads)

    def canonical_exact(self, values: tuple[Any, ...] | list[Any]) -> bytes | None:
        """The canonical bytes, the exact (slow) way: None when ingestion cannot have hashed
        them (an integer beyond 64 bits, a non-finite number, a JSON column not JSON)."""
        content = self._content(values, loads_exact)
        if content is None:
            return None
        try:
            return canonical_json(content)
        except TypeError:  # an integer beyond 64 bits (orjson.JSONEncodeError is a TypeError)
            return None

    def hashed(self, values: tuple[Any, ...] | list[Any]
               ) -> tuple[str, dict[str, Any] | None]:
        """The content hash (:data:`UNVERIFIABLE` when there is none) and the content as the
        quick way read it."""
        content = self._content(values, _loads)
        if content is None:
            return UNVERIFIABLE, None
        body = _dumps(content, option=_SORT)
        if _BIG in body:
            body = self.canonical_exact(values)  # type: ignore[assignment]
            if body is None:
                return UNVERIFIABLE, content
        return _sha256(body).hexdigest(), content


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
    annotations, the last closing record (seq, data). The next rows are fetched while these
    are hashed: one process, a core for PostgreSQL and one for Python (280k records, one
    process: 3.6 -> 3.0-3.3 s)."""
    sql, reader = records_sql(model, where)
    hashed = reader.hashed
    closing_kind = model.kind == "annotation"  # type: ignore[attr-defined]
    rows = rows_fetched_ahead(f"fast_{model._meta.model_name}", sql, params)
    for run_pk, group in groupby(rows, itemgetter(0)):
        entries: list[Entry] = []
        closing = None
        for row in group:
            digest, content = hashed(row[4:])
            if closing_kind and content is not None and \
                    content["annotation_kind"] == "run_status":
                closing = (row[1], content["data"])
            entries.append((row[1], digest, row[2], row[3]))
        yield run_pk, entries, closing


def records_sql(model: type[models.Model], where: str) -> tuple[str, ColumnContent]:
    """The records of ``model`` this pass reads, in run and seq order: (run pk, seq, stored
    content hash, stored chain link, then the content fields as ``content_select`` gives
    them), and how to hash those. ``where`` is over the record as ``t``."""
    columns, reader, source = content_select(model)
    return (f"SELECT t.run_id, t.seq, t.content_hash, t.chain_hash, {', '.join(columns)} "  # noqa: S608
            f"FROM {source} WHERE {where} ORDER BY t.run_id, t.seq"), reader


def runs_sql(where: str) -> tuple[str, ColumnContent]:
    """The run rows this pass reads, in pk order: (pk, run id, stored content hash, chain
    hash, last seq, head hash, status, ended at, then the run's content fields), and how to
    hash those."""
    from .models import Run

    columns, reader, source = content_select(Run)
    return (f"SELECT t.id, t.run_id, t.content_hash, t.chain_hash, t.last_seq, "  # noqa: S608
            f"t.head_hash, t.status, t.ended_at, {', '.join(columns)} FROM {source} "
            f"WHERE {where} ORDER BY t.id"), reader


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
    run_sql, run_reader = runs_sql(run_where)
    for row in _rows("fast_run", run_sql, run_params):
        pk, run_id, content, link, last_seq, head, status, ended_at = row[:8]
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
                                run_reader.hashed(row[8:])[0])
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
