"""The record tables lose the single-column indexes of foreign keys that a composite index
already leads with: every record's run (its unique (run, seq)), a call's or annotation's tenant
(its unique (tenant, call_id) or (tenant, annotation_id), and the admin's (tenant, ...)), a
tool call's tool ((tool, -id)). Each is one index entry fewer written per record stored.

On PostgreSQL the tables are partitioned: dropping the parent's index drops each month's.
Only the indexes go: Django's own AlterField would also drop and re-add each foreign key,
which checks every row again (minutes over ten million records, under lock). The names are
Django's, the same on every install and database."""

import django.db.models.deletion
from django.db import migrations, models

INDEXES = [
    ("runs_annotation", "run_id", "runs_annotation_run_id_27f5bb69"),
    ("runs_annotation", "tenant_id", "runs_annotation_tenant_id_bde5a0f0"),
    ("runs_modelcall", "run_id", "runs_modelcall_run_id_0bb33ec9"),
    ("runs_modelcall", "tenant_id", "runs_modelcall_tenant_id_194a9a73"),
    ("runs_step", "run_id", "runs_step_run_id_2764751d"),
    ("runs_toolcall", "run_id", "runs_toolcall_run_id_d2fbb3a3"),
    ("runs_toolcall", "tenant_id", "runs_toolcall_tenant_id_1e9971bc"),
    ("runs_toolcall", "tool_id", "runs_toolcall_tool_id_a78015ea"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("ledger_portal", "0012_tenant_batch_unknown_fields"),
        ("runs", "0037_remove_whole_months"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    [f'DROP INDEX IF EXISTS "{name}"' for _, _, name in INDEXES],
                    [
                        f'CREATE INDEX IF NOT EXISTS "{name}" ON "{table}" ("{column}")'
                        for table, column, name in INDEXES
                    ],
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="annotation",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="annotation",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="ledger_portal.tenant",
                    ),
                ),
                migrations.AlterField(
                    model_name="modelcall",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="modelcall",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="ledger_portal.tenant",
                    ),
                ),
                migrations.AlterField(
                    model_name="step",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="toolcall",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="toolcall",
                    name="tenant",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="ledger_portal.tenant",
                    ),
                ),
                migrations.AlterField(
                    model_name="toolcall",
                    name="tool",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="calls",
                        to="runs.tool",
                    ),
                ),
            ],
        )
    ]
