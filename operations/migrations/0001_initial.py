"""Replays, their steps and rollbacks, moved here from runs/ with their tables, rows and
constraints as they were (runs 0023 lets go of them in the state). Their content types move
with them, so admin history and permissions keep pointing at the same rows."""

from typing import Any

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

MOVED = ("replay", "replaystep", "rollback")


def _relabel(apps: Any, old: str, new: str) -> None:
    content_types = apps.get_model("contenttypes", "ContentType")
    for model in MOVED:
        if not content_types.objects.filter(app_label=new, model=model).exists():
            content_types.objects.filter(app_label=old, model=model).update(app_label=new)


def move_content_types(apps: Any, schema_editor: Any) -> None:
    _relabel(apps, "runs", "operations")


def move_content_types_back(apps: Any, schema_editor: Any) -> None:
    _relabel(apps, "operations", "runs")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('approvals', '0004_governance_append_only'),
        ('incidents', '0002_incident_replays'),
        ('ledger_portal', '0009_personal_access_tokens'),
        ('policies', '0009_job_heartbeats'),
        ('runs', '0022_digest_seals_governance'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[
                migrations.CreateModel(
                    name='Replay',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('mode', models.CharField(choices=[('sandbox', 'Sandbox'), ('live', 'Live')], default='sandbox', max_length=7)),
                        ('until_step', models.PositiveIntegerField(blank=True, help_text='The last plan step (its index) replayed; empty: all.', null=True)),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('waiting_approval', 'waiting for approval'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('rejected', 'Rejected')], default='queued', max_length=16)),
                        ('steps_total', models.PositiveIntegerField(default=0)),
                        ('steps_done', models.PositiveIntegerField(default=0)),
                        ('divergent_steps', models.PositiveIntegerField(default=0)),
                        ('failure_reason', models.TextField(blank=True)),
                        ('requested_by_label', models.CharField(blank=True, max_length=200)),
                        ('task_id', models.CharField(blank=True, help_text='The Celery message that may work on it now.', max_length=64)),
                        ('worker', models.CharField(blank=True, help_text='host:pid working on it.', max_length=200)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('deadline_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('heartbeat_at', models.DateTimeField(blank=True, null=True)),
                        ('stalls', models.PositiveSmallIntegerField(default=0)),
                        ('approval', models.ForeignKey(blank=True, help_text='The HITL request the replay waits for or went ahead on.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='approvals.approvalrequest')),
                        ('policy_version', models.ForeignKey(blank=True, help_text='Pinned version; empty: whatever is published.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='policies.policyversion')),
                        ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('run', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='replay_jobs', to='runs.run')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='ledger_portal.tenant')),
                    ],
                    options={
                        'db_table': 'runs_replay',
                        'ordering': ['-id'],
                    },
                ),
                migrations.CreateModel(
                    name='ReplayStep',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('seq', models.PositiveIntegerField(help_text='Position in the replay (1, 2, ...).')),
                        ('call_id', models.CharField(max_length=200)),
                        ('step_index', models.PositiveIntegerField(blank=True, help_text='The plan step of the recorded call.', null=True)),
                        ('mode_used', models.CharField(choices=[('live', 'live call'), ('dry_run', 'dry run'), ('stub', 'recorded output (stub)'), ('not_called', 'not called')], max_length=10)),
                        ('idempotency_key', models.CharField(blank=True, max_length=200)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('output', models.JSONField(blank=True, null=True)),
                        ('status', models.CharField(choices=[('attempting', 'attempting (sent, no answer recorded yet)'), ('waiting_approval', 'waiting for approval'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('denied', 'Denied')], max_length=16)),
                        ('error', models.TextField(blank=True)),
                        ('latency_ms', models.FloatField(blank=True, null=True)),
                        ('divergence', models.JSONField(blank=True, help_text='How the output differs from the recorded one.', null=True)),
                        ('flagged', models.BooleanField(default=False, help_text='Flagged for follow-up.')),
                        ('follow_up', models.CharField(blank=True, choices=[('open', 'Open'), ('queued_for_fuzzing', 'queued for fuzz testing'), ('expected', 'expected (not an issue)'), ('fixed', 'Fixed')], default='', help_text="A flagged step's follow-up; empty: not flagged.", max_length=20)),
                        ('follow_up_note', models.TextField(blank=True, default='')),
                        ('follow_up_by_label', models.CharField(blank=True, default='', max_length=200)),
                        ('follow_up_at', models.DateTimeField(blank=True, null=True)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('decision', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='policies.decision')),
                        ('follow_up_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('replay', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='steps', to='operations.replay')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='ledger_portal.tenant')),
                        ('tool', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='runs.tool')),
                    ],
                    options={
                        'db_table': 'runs_replaystep',
                        'ordering': ['replay', 'seq'],
                    },
                ),
                migrations.CreateModel(
                    name='Rollback',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('succeeded', 'Succeeded'), ('failed', 'Failed'), ('partial', 'partial (side effects remain)')], default='queued', max_length=9)),
                        ('idempotency_key', models.CharField(help_text='Sent with every compensate attempt; derived from the call.', max_length=200)),
                        ('attempts', models.PositiveSmallIntegerField(default=0)),
                        ('attempt_log', models.JSONField(blank=True, default=list, help_text='One entry per attempt: when, result, error, the backoff before the next.')),
                        ('outcome', models.JSONField(blank=True, help_text='What the hook answered.', null=True)),
                        ('remaining_side_effects', models.JSONField(blank=True, default=list)),
                        ('last_error', models.TextField(blank=True)),
                        ('requested_by_label', models.CharField(blank=True, max_length=200)),
                        ('batch', models.CharField(blank=True, db_index=True, help_text='Whole-run rollbacks share a batch, in `position` order.', max_length=32)),
                        ('position', models.PositiveIntegerField(default=0)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('last_activity_at', models.DateTimeField(default=django.utils.timezone.now, help_text='For the watchdog.')),
                        ('decision', models.ForeignKey(blank=True, help_text='The policy decision that let this compensation go ahead.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='policies.decision')),
                        ('incident', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='rollbacks', to='incidents.incident')),
                        ('requested_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                        ('run', models.ForeignKey(help_text='The run of the call (for whole-run rollbacks).', on_delete=django.db.models.deletion.PROTECT, related_name='+', to='runs.run')),
                        ('tenant', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='ledger_portal.tenant')),
                        ('tool_call', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='rollbacks', to='runs.toolcall')),
                    ],
                    options={
                        'db_table': 'runs_rollback',
                        'ordering': ['-id'],
                    },
                ),
                migrations.AddIndex(
                    model_name='replay',
                    index=models.Index(fields=['tenant', '-id'], name='replay_tenant_id'),
                ),
                migrations.AddIndex(
                    model_name='replay',
                    index=models.Index(fields=['status', 'deadline_at'], name='replay_status_deadline'),
                ),
                migrations.AddIndex(
                    model_name='replaystep',
                    index=models.Index(condition=models.Q(('flagged', True)), fields=['tenant', 'follow_up', '-id'], name='replay_step_follow_up'),
                ),
                migrations.AddConstraint(
                    model_name='replaystep',
                    constraint=models.UniqueConstraint(fields=('replay', 'seq'), name='replay_step_seq_unique'),
                ),
                migrations.AddIndex(
                    model_name='rollback',
                    index=models.Index(fields=['status', 'last_activity_at'], name='rollback_watchdog'),
                ),
                migrations.AddConstraint(
                    model_name='rollback',
                    constraint=models.UniqueConstraint(fields=('tenant', 'tool_call'), name='rollback_once_per_call'),
                ),
        ]),
        migrations.RunPython(move_content_types, move_content_types_back, elidable=False),
    ]
