"""The record tables' indexes, on SQLite and on PostgreSQL's partitioned tables: every foreign
key is the leading column of an index, so removing a referenced row never reads a whole table;
and no index is the leading part of another, since each one is an entry more written for every
record stored."""

from __future__ import annotations

import pytest
from django.db import connection, models

from runs.models import Annotation, ModelCall, Step, ToolCall

pytestmark = [pytest.mark.django_db]
RECORD_MODELS = [Step, ModelCall, ToolCall, Annotation]


def indexes_of(model: type[models.Model]) -> dict[str, tuple[str, ...]]:
    """Every index of the model's table (unique keys included, as SQLite keeps them there):
    name -> its columns, in order."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, model._meta.db_table)
    return {name: tuple(found["columns"]) for name, found in constraints.items()
            if (found["index"] or found["unique"] or found["primary_key"])
            and not found["foreign_key"] and found["columns"]}


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda m: m.__name__)
def test_every_foreign_key_leads_an_index(model: type[models.Model]) -> None:
    leading = {columns[0] for columns in indexes_of(model).values()}
    foreign_keys = [f.column for f in model._meta.concrete_fields
                    if isinstance(f, models.ForeignKey)]
    assert foreign_keys
    assert [column for column in foreign_keys if column not in leading] == []


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda m: m.__name__)
def test_no_index_is_the_leading_part_of_another(model: type[models.Model]) -> None:
    indexes = indexes_of(model)
    covered = sorted(
        (name, other) for name, columns in indexes.items()
        for other, longer in indexes.items()
        if other != name and longer[:len(columns)] == columns
        and (len(longer) > len(columns) or name > other))
    assert covered == []
