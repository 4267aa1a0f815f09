"""Fast appends of new ledger rows.

On PostgreSQL, ids are drawn from the tables' sequences in one query and the rows go in with
``COPY``: Django's ``bulk_create`` spent most of an ingestion batch quoting arrays of JSON on
the client. Elsewhere (SQLite) it is ``bulk_create``, originals before their retries so every
foreign key has its primary key.

``build`` makes the unsaved instances those appends take without ``Model.__init__``'s generic
per-field work (a batch makes tens of thousands of them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import orjson
from django.db import DEFAULT_DB_ALIAS, connection, connections, models, router
from django.db.models import signals
from django.db.models.base import ModelState
from django.db.models.query_utils import DeferredAttribute
from django.utils import timezone

M = TypeVar("M", bound=models.Model)


def insert_all(groups: Sequence[tuple[type[models.Model], Sequence[models.Model]]]) -> None:
    """Insert each group's new rows; groups come in dependency order (referenced first)."""
    if connection.vendor == "postgresql":
        _allocate_ids([(model, objs) for model, objs in groups if objs])
        for model, objs in groups:
            _copy(model, objs)
        return
    for model, objs in groups:
        pending = list(objs)
        while pending:  # rows that point at rows of the same table wait for them
            ready = [o for o in pending if _targets_saved(o)]
            model._default_manager.bulk_create(ready)
            ready_ids = {id(o) for o in ready}
            pending = [o for o in pending if id(o) not in ready_ids]


def append_rows(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    """Insert rows nothing else in the transaction points at: on PostgreSQL their ids come from
    the table's default while the rows are copied, and the instances keep ``pk = None``."""
    if connection.vendor == "postgresql":
        _copy(model, objs, with_pk=False)
    else:
        model._default_manager.bulk_create(objs)


def insert_one(obj: M) -> M:
    """``obj.save(force_insert=True)`` for one new row, with its INSERT built once per model:
    Django compiles the statement anew on every save, and with the model-save machinery around
    it that is about 0.4 ms, as much as PostgreSQL's durable insert itself (a decision is one
    such row per request, bench/decisions.py). Values are prepared as ``save`` prepares them and
    ``pre_save``/``post_save`` are sent when anything listens. A row with an inherited table or a
    primary key already set is saved by ``save``."""
    model = type(obj)
    alias = router.db_for_write(model, instance=obj)
    target = connections[alias]
    if model._meta.parents or obj.pk is not None or not obj._state.adding or \
            not target.features.can_return_columns_from_insert:
        obj.save(force_insert=True, using=alias)
        return obj
    if signals.pre_save.has_listeners(model):
        signals.pre_save.send(sender=model, instance=obj, raw=False, using=alias,
                              update_fields=None)
    sql, fields = _insert_statement(model, alias)
    values = [field.get_db_prep_save(field.pre_save(obj, True), target) for field in fields]
    with target.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    obj.pk = row[0]
    obj._state.adding, obj._state.db = False, alias
    if signals.post_save.has_listeners(model):
        signals.post_save.send(sender=model, instance=obj, created=True, update_fields=None,
                               raw=False, using=alias)
    return obj


@cache
def _insert_statement(model: type[models.Model], alias: str
                      ) -> tuple[str, tuple[models.Field[Any, Any], ...]]:
    """``INSERT INTO <table> (<every column but the key>) VALUES (...) RETURNING <key>``."""
    meta = model._meta
    fields = tuple(f for f in meta.local_concrete_fields if not f.primary_key
                   and not getattr(f, "generated", False))
    quote = connections[alias].ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    sql = (f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({marks}) "  # noqa: S608
           f"RETURNING {quote(str(meta.pk.column))}")
    return sql, fields


def _targets_saved(obj: models.Model) -> bool:
    for field in obj._meta.concrete_fields:
        if field.is_relation and field.related_model is type(obj):
            target = field.get_cached_value(obj, default=None)  # type: ignore[attr-defined]
            if target is not None and target.pk is None:
                return False
    return True


def _allocate_ids(groups: Sequence[tuple[type[models.Model], Sequence[models.Model]]]) -> None:
    """Primary keys for every group's rows from their tables' sequences, in one round trip."""
    if not groups:
        return
    sql = " UNION ALL ".join(
        ["(SELECT %s::int, nextval(pg_get_serial_sequence(%s, 'id')) "
         "FROM generate_series(1, %s))"] * len(groups))
    params: list[Any] = []
    for i, (model, objs) in enumerate(groups):
        params += [i, model._meta.db_table, len(objs)]
    ids: list[list[int]] = [[] for _ in groups]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for i, pk in cursor.fetchall():
            ids[i].append(pk)
    for (_, objs), pks in zip(groups, ids, strict=True):
        for obj, pk in zip(objs, pks, strict=True):
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = connection.alias


@dataclass(frozen=True)
class _CopyPlan:
    """A table's columns in the order a row is made in: plain, foreign keys, JSON, timestamps
    the database would stamp (``auto_now``)."""

    columns: str
    plain: tuple[str, ...]
    relations: tuple[tuple[Any, str], ...]  # (field, attname)
    json: tuple[str, ...]
    stamped: tuple[str, ...]


@cache
def _copy_plan(model: type[models.Model], with_pk: bool = True) -> _CopyPlan:
    plain, relations, json, stamped = [], [], [], []
    for field in model._meta.concrete_fields:
        if field.primary_key and not with_pk:
            continue
        if field.is_relation:
            relations.append(field)
        elif getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
            stamped.append(field)
        elif isinstance(field, models.JSONField):
            json.append(field)
        else:
            plain.append(field)
    ordered = plain + relations + json + stamped
    return _CopyPlan(
        columns=", ".join(connection.ops.quote_name(str(f.column)) for f in ordered),
        plain=tuple(f.attname for f in plain),
        relations=tuple((f, f.attname) for f in relations),
        json=tuple(f.attname for f in json),
        stamped=tuple(f.attname for f in stamped))


def _copy(model: type[models.Model], objs: Sequence[models.Model], with_pk: bool = True) -> None:
    if not objs:
        return
    plan = _copy_plan(model, with_pk)
    table = connection.ops.quote_name(model._meta.db_table)
    now = timezone.now()
    dumps = orjson.dumps
    # psycopg's own cursor, so its errors are wrapped by hand: a unique violation (a concurrent
    # batch stored the same call id first) is Django's IntegrityError, which ingestion retries
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(
            f"COPY {table} ({plan.columns}) FROM STDIN") as copy:
        for obj in objs:
            values = obj.__dict__
            row = [values[name] for name in plan.plain]
            for field, attname in plan.relations:
                target = field.get_cached_value(obj, default=None)
                row.append(target.pk if target is not None else values[attname])
            for name in plan.json:
                value = values[name]
                row.append(None if value is None else dumps(value).decode())
            for name in plan.stamped:
                values[name] = now
                row.append(now)
            copy.write_row(row)


# -- building instances ----------------------------------------------------------------------


@dataclass(frozen=True)
class _BuildField:
    name: str
    attname: str
    default: Callable[[], Any]  # field.get_default, for a field declaring a default
    fixed: Any = None  # what get_default always gives for a field declaring none (None or "")
    related: type[models.Model] | None = None  # a foreign key's target model
    target_attname: str = ""  # ... and the target's field it holds

    @classmethod
    def of(cls, field: Any, **more: Any) -> _BuildField:
        declared = field.has_default()
        return cls(field.name, field.attname, field.get_default if declared else _no_default,
                   None if declared else field.get_default(), **more)


def _no_default() -> Any:
    raise AssertionError("a field without a default uses its fixed value")


@cache
def _build_plan(model: type[models.Model]) -> tuple[_BuildField, ...] | None:
    """How ``build`` fills each concrete field; None where it must leave it to ``__init__``
    (init signal receivers, database-side defaults, fields that are not plain columns)."""
    if signals.pre_init.has_listeners(model) or signals.post_init.has_listeners(model):
        return None
    plan = []
    for field in model._meta.concrete_fields:
        if getattr(field, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED or \
                getattr(field, "generated", False):
            return None
        if not field.is_relation:
            if field.descriptor_class is not DeferredAttribute:
                return None  # a descriptor of its own (files...): __init__ goes through it
            plan.append(_BuildField.of(field))
            continue
        if not isinstance(field, models.ForeignKey) or isinstance(field, models.OneToOneField) \
                or len(field.related_fields) != 1:
            return None
        target = field.related_fields[0][1]
        plan.append(_BuildField.of(field, related=field.remote_field.model._meta.concrete_model,
                                   target_attname=target.attname))
    return tuple(plan)


def build(model: type[M], /, **values: Any) -> M:
    """``model(**values)`` for a new row, the same instance state, in a fraction of the time.

    Fields are given by name (a foreign key as the related instance, saved or not), as
    ``__init__`` takes them; missing ones get their defaults. Anything ``build`` does not handle
    (unknown names, attnames such as ``run_id``, models with init signals) goes to ``__init__``.
    """
    plan = _build_plan(model)
    if plan is None:
        return model(**values)
    routers = router.routers
    obj = model.__new__(model)
    state = obj._state = ModelState()
    attrs = obj.__dict__
    used = 0
    for field in plan:
        if field.name in values:
            value = values[field.name]
            used += 1
            if field.related is not None:  # what the descriptor's __set__ does
                if value is not None:
                    if not isinstance(value, field.related):
                        return model(**values)  # let __init__ raise its error
                    if routers:
                        if state.db is None:
                            state.db = router.db_for_write(model, instance=value)
                        if value._state.db is None:
                            value._state.db = router.db_for_write(type(value), instance=obj)
                        if not router.allow_relation(value, obj):
                            return model(**values)
                    else:  # what the router answers without routers, without asking it
                        if state.db is None:
                            state.db = value._state.db or DEFAULT_DB_ALIAS
                        if value._state.db is None:
                            value._state.db = state.db
                        if value._state.db != state.db:
                            return model(**values)
                state.fields_cache[field.name] = value
                attrs[field.attname] = (None if value is None
                                        else getattr(value, field.target_attname))
            else:
                attrs[field.attname] = value
        elif field.default is _no_default:
            attrs[field.attname] = field.fixed
        else:
            attrs[field.attname] = field.default()
    if used != len(values):
        return model(**values)  # a name that is not a concrete field: __init__ decides
    return obj

