"""On PostgreSQL, the OpenTelemetry event buffer's id-uniqueness trigger function plans its
check as an index probe of each partition, however empty the partitions were when a session
first planned it (core/partitions.install_id_check). The guarantee is the same, so going back
keeps the new function. A no-op on SQLite."""

from django.db import migrations

from core.partitions import planned_id_check


class Migration(migrations.Migration):
    dependencies = [("runs", "0038_record_fk_indexes_covered")]

    operations = [migrations.RunPython(planned_id_check("runs_otlpevent"),
                                       migrations.RunPython.noop, elidable=False)]
