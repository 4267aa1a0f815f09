"""On PostgreSQL, the ledger's record tables (steps, model calls, tool calls, annotations) are
partitioned by month of ``recorded_at``, the time the portal stored the record (never the
agent's own timestamps). A no-op on SQLite.

Their unique keys contain no time (a call's ``(tenant, call_id)``, a record's ``(run, seq)``,
the ``id`` other rows refer to), so each table's keys move to a plain side table,
``<table>_keys``, kept in step by triggers, and the foreign keys to a record point at it
(core/partition_keys.py). Steps go first: model and tool calls refer to them. Rewrites each
table under an exclusive lock: see docs/operations.md, "Partitions"."""

from django.db import migrations

from core.partitions import partition_by_month

TABLES = ("runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation")
steps = [partition_by_month(table, "recorded_at") for table in TABLES]


def forward(apps, schema_editor):
    for partition, _ in steps:
        partition(apps, schema_editor)


def backward(apps, schema_editor):
    for _, unpartition in reversed(steps):
        unpartition(apps, schema_editor)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0034_record_run_id_n_distinct"),
        ("incidents", "0003_replays_in_operations"),
        ("operations", "0001_initial"),
    ]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
