"""The OpenTelemetry span buffer: spans wait here, per (tenant, trace), until their run is
assembled, and stay as the raw form of what became ledger records (or could not).

Not ledger rows: a trace moves from pending to open to closed, a span from pending to its
outcome. The ledger records themselves are written by ingestion, chained as usual.
"""

from __future__ import annotations

from django.db import models

from core.models import TenantOwned


class OtlpTraceState(models.TextChoices):
    PENDING = "pending"  # spans buffered, no run recorded yet
    OPEN = "open"  # run recorded and running: new spans append to it
    CLOSED = "closed"  # run closed: new spans are kept raw as late


class OtlpTrace(TenantOwned):
    trace_id = models.CharField(max_length=32, help_text="Lowercase hex, 16 bytes.")
    run_id = models.CharField(max_length=200)
    state = models.CharField(max_length=8, choices=OtlpTraceState.choices,
                             default=OtlpTraceState.PENDING)
    first_received_at = models.DateTimeField()
    last_activity_at = models.DateTimeField(
        help_text="When the trace last received a span or was recorded (the quiet period "
        "counts from here).")
    recorded_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    for_agents = models.JSONField(
        null=True, blank=True, help_text="The agents the keys that sent its spans act for, "
        "when bound (null: any); recording it later keeps to them.")


    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "trace_id"],
                                               name="otlp_trace_unique_per_tenant")]
        indexes = [models.Index(fields=["state", "last_activity_at"],
                                name="otlp_trace_idle")]

    def __str__(self) -> str:
        return f"{self.trace_id} ({self.state})"


class OtlpSpanState(models.TextChoices):
    PENDING = "pending"
    RECORDED = "recorded"  # became a run, step, model call or tool call
    UNMAPPED = "unmapped"  # no ledger record fits: kept raw, noted on the run
    LATE = "late"  # arrived after its run closed: kept raw, reported on the run


class OtlpSpan(TenantOwned):
    # No index of its own: the unique (trace, span_id) index leads with it.
    trace = models.ForeignKey(OtlpTrace, on_delete=models.PROTECT, related_name="spans",
                              db_index=False)
    span_id = models.CharField(max_length=16, help_text="Lowercase hex, 8 bytes.")
    parent_span_id = models.CharField(max_length=16, blank=True)
    name = models.CharField(max_length=500, blank=True)
    state = models.CharField(max_length=8, choices=OtlpSpanState.choices,
                             default=OtlpSpanState.PENDING)
    record_kind = models.CharField(max_length=20, blank=True,
                                   help_text="The ledger record it became, if any.")
    body = models.JSONField(help_text="The span as received (attributes decoded).")
    received_at = models.DateTimeField()


    class Meta:
        constraints = [models.UniqueConstraint(fields=["trace", "span_id"],
                                               name="otlp_span_unique_per_trace")]
        # Only the spans waiting are looked up by state. A partial index: a span taking its
        # outcome leaves it rather than writing a new entry (every buffered child of a split
        # trace does, when its root comes), and spans recorded at once never enter it.
        indexes = [models.Index(fields=["trace"], condition=models.Q(state="pending"),
                                name="otlp_span_pending")]

    def __str__(self) -> str:
        return f"{self.name} ({self.span_id})"


class OtlpEvent(TenantOwned):
    """A GenAI event received as an OTLP log record (content capture in event mode) whose span
    has not arrived yet: it waits here, and joins the span's events when the span comes (the
    row then goes: the span keeps it). By trace id, not a key to the trace's buffer row: an
    event may come before any span of its trace."""

    trace_id = models.CharField(max_length=32, help_text="Lowercase hex, 16 bytes.")
    span_id = models.CharField(max_length=16, help_text="Lowercase hex, 8 bytes.")
    body = models.JSONField(help_text="The event as a span event: name, time, attributes.")
    received_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "trace_id"], name="otlp_event_trace")]

    def __str__(self) -> str:
        return f"{self.body.get('name', '')} ({self.span_id})"
