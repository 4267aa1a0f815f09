"""On PostgreSQL, the partitioned OpenTelemetry event buffer's id-uniqueness trigger gets a
function of its own, whose plan PostgreSQL caches (core/partitions.install_id_check): the
generic function planned its dynamic query on every event stored. The guarantee is the same,
so going back keeps the new function. A no-op on SQLite."""

from django.db import migrations

from core.partitions import planned_id_check


class Migration(migrations.Migration):
    dependencies = [("runs", "0031_otlp_events_partitioned")]

    operations = [migrations.RunPython(planned_id_check("runs_otlpevent"),
                                       migrations.RunPython.noop, elidable=False)]
