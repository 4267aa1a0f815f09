"""Replays moved from runs to operations (operations 0001): the link table is unchanged."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('incidents', '0002_incident_replays'),
        ('operations', '0001_initial'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.AlterField(
                    model_name='incident',
                    name='replays',
                    field=models.ManyToManyField(blank=True, help_text='Replays run to investigate or check a fix.', related_name='incidents', to='operations.replay'),
                ),
        ]),
    ]
