"""On PostgreSQL, decisions are partitioned by month of ``created_at`` (core/partitions.py):
every row kept, the primary key becomes (id, created_at), the foreign keys to a decision
(approval requests, replay steps, rollbacks) become deferred constraint triggers. A no-op on
SQLite. Rewrites the table under an exclusive lock: see docs/operations.md, "Partitions"."""

from django.db import migrations

from core.partitions import partition_by_month

forward, backward = partition_by_month("policies_decision", "created_at")


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0013_backtests_read_redacted_arguments"),
        ("approvals", "0005_notification_routes"),
        ("operations", "0001_initial"),
    ]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
