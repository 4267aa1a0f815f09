"""Replays moved from runs to operations (operations 0001): the column is unchanged."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('operations', '0001_initial'),
        ('policies', '0009_job_heartbeats'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.AlterField(
                    model_name='decision',
                    name='replay',
                    field=models.ForeignKey(blank=True, help_text="Taken during this replay: part of the replay's trail, not the original run's.", null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='operations.replay'),
                ),
        ]),
    ]
