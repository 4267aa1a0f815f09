"""Fast appends of new ledger rows.

On PostgreSQL, ids are drawn from each table's sequence in one query and the rows go in with
``COPY``: Django's ``bulk_create`` spent most of an ingestion batch quoting arrays of JSON on
the client. Elsewhere (SQLite) it is ``bulk_create``, originals before their retries so every
foreign key has its primary key.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from django.db import connection, models
from django.utils import timezone


def insert_all(groups: Sequence[tuple[type[models.Model], Sequence[models.Model]]]) -> None:
    """Insert each group's new rows; groups come in dependency order (referenced first)."""
    if connection.vendor == "postgresql":
        for model, objs in groups:
            _allocate_ids(model, objs)
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


def _targets_saved(obj: models.Model) -> bool:
    for field in obj._meta.concrete_fields:
        if field.is_relation and field.related_model is type(obj):
            target = field.get_cached_value(obj, default=None)  # type: ignore[attr-defined]
            if target is not None and target.pk is None:
                return False
    return True


def _allocate_ids(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    if not objs:
        return
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, 'id')) "
                       "FROM generate_series(1, %s)", [table, len(objs)])
        for obj, (pk,) in zip(objs, cursor.fetchall(), strict=True):
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = connection.alias


def _column_value(obj: models.Model, field: Any, now: Any) -> Any:
    if field.is_relation:
        target = field.get_cached_value(obj, default=None)
        return target.pk if target is not None else getattr(obj, field.attname)
    if getattr(field, "auto_now_add", False) or getattr(field, "auto_now", False):
        setattr(obj, field.attname, now)
        return now
    value = getattr(obj, field.attname)
    if isinstance(field, models.JSONField):
        return None if value is None else orjson.dumps(value).decode()
    return value


def _copy(model: type[models.Model], objs: Sequence[models.Model]) -> None:
    if not objs:
        return
    fields = list(model._meta.concrete_fields)
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    now = timezone.now()
    with connection.cursor() as cursor, cursor.cursor.copy(
            f"COPY {table} ({columns}) FROM STDIN") as copy:
        for obj in objs:
            copy.write_row([_column_value(obj, f, now) for f in fields])
