"""On PostgreSQL, the OpenTelemetry event buffer (events waiting for their span) is
partitioned by month of ``received_at`` (core/partitions.py); a no-op on SQLite."""

from django.db import migrations

from core.partitions import partition_by_month

forward, backward = partition_by_month("runs_otlpevent", "received_at")


class Migration(migrations.Migration):
    dependencies = [("runs", "0030_admin_seek_indexes")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
