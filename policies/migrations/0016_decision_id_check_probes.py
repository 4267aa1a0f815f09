"""On PostgreSQL, the decisions' id-uniqueness trigger function plans its check as an index
probe of each partition, however empty the partitions were when a session first planned it
(core/partitions.install_id_check). The guarantee is the same, so going back keeps the new
function. A no-op on SQLite."""

from django.db import migrations

from core.partitions import planned_id_check


class Migration(migrations.Migration):
    dependencies = [("policies", "0015_decision_id_check_planned")]

    operations = [migrations.RunPython(planned_id_check("policies_decision"),
                                       migrations.RunPython.noop, elidable=False)]
