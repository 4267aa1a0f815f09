"""On PostgreSQL, trigram indexes for finding runs by part of an id (runs/search.py).

Prefix and contains searches ignore case: Django sends ``UPPER(col::text) LIKE UPPER(%s)``,
which a GIN index over the same expression with ``gin_trgm_ops`` serves (a leading
``%`` included). Built concurrently, so ingestion keeps writing while a big ledger is
indexed. pg_trgm is a trusted extension: the tables' owner, who runs migrations, may create
it. Other databases search without these indexes.
"""

from django.db import migrations

INDEXES = {
    "run_run_id_trgm": ("runs_run", "run_id"),
    "run_trigger_ref_trgm": ("runs_run", "trigger_ref"),
    "agent_agent_id_trgm": ("runs_agent", "agent_id"),
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for name, (table, column) in INDEXES.items():
        # An earlier build that failed half-way leaves an invalid index behind.
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY {name} ON {table} "
                              f"USING gin ((UPPER({column}::text)) gin_trgm_ops)")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction
    dependencies = [("runs", "0023_operations_moved_out")]
    operations = [migrations.RunPython(create, drop)]
