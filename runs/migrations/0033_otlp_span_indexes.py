"""The span buffer's indexes, cheaper to keep: the trace's own index goes (the unique
(trace, span_id) index leads with the trace), and (trace, state) becomes an index of the
pending spans only, which a span leaves when it takes its outcome instead of writing a new
entry. A span written to the buffer, or updated with its outcome, maintained five index
entries; now three (four for a span written pending)."""


import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('ledger_portal', '0012_tenant_batch_unknown_fields'),
        ('runs', '0032_otlp_event_id_check_planned'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='otlpspan',
            name='otlp_span_trace_state',
        ),
        migrations.AlterField(
            model_name='otlpspan',
            name='trace',
            field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='spans', to='runs.otlptrace'),
        ),
        migrations.AddIndex(
            model_name='otlpspan',
            index=models.Index(condition=models.Q(('state', 'pending')), fields=['trace'], name='otlp_span_pending'),
        ),
    ]
