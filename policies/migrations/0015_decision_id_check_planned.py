"""On PostgreSQL, the partitioned decisions table's id-uniqueness trigger gets a function of its
own, whose plan PostgreSQL caches (core/partitions.install_id_check): the generic function
planned its dynamic query on every decision stored. The guarantee is the same, so going back
keeps the new function. A no-op on SQLite."""

from django.db import migrations

from core.partitions import planned_id_check


class Migration(migrations.Migration):
    dependencies = [("policies", "0014_decisions_partitioned_by_month")]

    operations = [migrations.RunPython(planned_id_check("policies_decision"),
                                       migrations.RunPython.noop, elidable=False)]
