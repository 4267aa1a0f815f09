"""On PostgreSQL, the OpenTelemetry span buffer is partitioned by month of ``received_at``; a
span's ``(trace, span_id)`` stays unique across months in the side table of keys, as the
records' keys do (core/partition_keys.py). A no-op on SQLite."""

from django.db import migrations

from core.partitions import partition_by_month

forward, backward = partition_by_month("runs_otlpspan", "received_at")


class Migration(migrations.Migration):
    dependencies = [("runs", "0035_records_partitioned_by_month")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
