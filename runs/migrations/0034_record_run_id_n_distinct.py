"""The planner's idea of how many records a run has (PostgreSQL).

A run's records lie together, so ANALYZE's sample finds few distinct runs among them and
takes the table for a few runs with many records each: at 10,000,000 tool calls over 737,000
runs it counted 43,721, i.e. 229 tool calls a run (13.5 in truth), and read a run's tool calls
with a parallel plan, 6 ms of its 18 on the run's timeline spent starting workers. Declared
instead: about one run per 20 records of the table (a negative n_distinct is a fraction of the
rows, so it grows with them). An underestimate of a run's records costs nothing: a run is
always read through its (run, seq) index. Applied at the next ANALYZE (autovacuum's).
"""

from django.db import migrations

TABLES = ("runs_step", "runs_modelcall", "runs_toolcall")
RUNS_PER_RECORD = "-0.05"


def declare(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN run_id "
                                  f"SET (n_distinct = {RUNS_PER_RECORD})", params=None)


def undeclare(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN run_id RESET (n_distinct)",
                                  params=None)


class Migration(migrations.Migration):

    dependencies = [("runs", "0033_otlp_span_indexes")]

    operations = [migrations.RunPython(declare, undeclare, elidable=False)]
