"""Replays, their steps and rollbacks now belong to operations (operations 0001), which
kept their tables: the state forgets them here, the database keeps every row."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('incidents', '0003_replays_in_operations'),
        ('policies', '0010_replays_in_operations'),
        ('runs', '0022_digest_seals_governance'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.RemoveField(
                    model_name='replaystep',
                    name='replay',
                ),
                migrations.RemoveField(
                    model_name='replaystep',
                    name='decision',
                ),
                migrations.RemoveField(
                    model_name='replaystep',
                    name='follow_up_by',
                ),
                migrations.RemoveField(
                    model_name='replaystep',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='replaystep',
                    name='tool',
                ),
                migrations.RemoveField(
                    model_name='rollback',
                    name='decision',
                ),
                migrations.RemoveField(
                    model_name='rollback',
                    name='incident',
                ),
                migrations.RemoveField(
                    model_name='rollback',
                    name='requested_by',
                ),
                migrations.RemoveField(
                    model_name='rollback',
                    name='run',
                ),
                migrations.RemoveField(
                    model_name='rollback',
                    name='tenant',
                ),
                migrations.RemoveField(
                    model_name='rollback',
                    name='tool_call',
                ),
                migrations.DeleteModel(
                    name='Replay',
                ),
                migrations.DeleteModel(
                    name='ReplayStep',
                ),
                migrations.DeleteModel(
                    name='Rollback',
                ),
        ]),
    ]
