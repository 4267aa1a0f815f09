"""Indexes for the admin's big lists: each sort (started_at, recorded_at) either way, with its
ties broken by id in the same direction, within a tenant (staff) and over all of them
(superusers), and a superuser's tool filter; so a page, the last one included, is an index
scan, and a deep page's keys an index-only scan (core/admin_base.py's SeekPaginator).

Built concurrently on PostgreSQL (ingestion keeps writing while a big ledger is indexed)."""

from django.db import migrations, models

from core.migration_operations import (
    AddIndexConcurrentlyWherePossible as AddIndex,
)
from core.migration_operations import (
    RemoveIndexConcurrentlyWherePossible as RemoveIndex,
)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY runs outside a transaction
    dependencies = [("runs", "0029_tool_dry_run_concurrency")]
    operations = [
        AddIndex("run", models.Index(fields=["tenant", "-started_at", "-id"],
                                     name="run_tenant_started_id")),
        RemoveIndex("run", "run_tenant_started"),
        AddIndex("run", models.Index(fields=["-started_at", "-id"], name="run_started_id")),
        AddIndex("run", models.Index(fields=["tenant", "-id"], name="run_tenant_id")),
        AddIndex("toolcall", models.Index(fields=["tenant", "-started_at", "-id"],
                                          name="toolcall_tenant_started_id")),
        RemoveIndex("toolcall", "toolcall_tenant_started"),
        AddIndex("toolcall", models.Index(fields=["-started_at", "-id"],
                                          name="toolcall_started_id")),
        AddIndex("toolcall", models.Index(fields=["tool", "-id"], name="toolcall_tool_id")),
        AddIndex("annotation", models.Index(fields=["tenant", "-id"],
                                            name="annotation_tenant_id")),
        AddIndex("annotation", models.Index(fields=["tenant", "-recorded_at", "-id"],
                                            name="annotation_tenant_recorded")),
        AddIndex("annotation", models.Index(fields=["-recorded_at", "-id"],
                                            name="annotation_recorded_id")),
    ]
