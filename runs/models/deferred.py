"""Deferred items: what the portal received and could not place in the ledger yet.

The runbook's "Deferred pending ledger schema reconciliation". Nothing received is dropped: a
field or enum value a newer agent sends, a span no ledger record fits, a gap in a trace, a gap
in a chain is kept here with the reason, linked to its run where there is one, until an
operator applies it (the mapping now places it: new chained records) or dismisses it with a
justification.

Not ledger rows: an item moves from pending to applied or dismissed. What it becomes when
applied is written by ingestion, chained as usual; ``applied_records`` names those records.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from core.models import TenantOwned


class DeferredSource(models.TextChoices):
    BATCH = "batch", "batch ingestion"
    OTLP_SPAN = "otlp_span", "OpenTelemetry span"
    OTLP_TRACE_GAP = "otlp_trace_gap", "OpenTelemetry trace gap"
    CHAIN_GAP = "chain_gap", "chain gap"


class DeferredStatus(models.TextChoices):
    PENDING = "pending"
    APPLIED = "applied"
    DISMISSED = "dismissed"


class DeferredReason(models.TextChoices):
    """Machine codes of why an item was deferred (``reason`` says it for people)."""

    UNKNOWN_FIELD = "unknown_field"
    UNKNOWN_VALUE = "unknown_value"
    UNMAPPED_SPAN = "unmapped_span"
    INVALID_SPAN = "invalid_span"
    LATE_SPAN = "late_span"
    TRACE_WITHOUT_RUN = "trace_without_run"
    MISSING_ROOT = "missing_root"
    MISSING_PARENT = "missing_parent"
    EVENT_WITHOUT_SPAN = "event_without_span"
    CHAIN_GAP = "chain_gap"


class DeferredItem(TenantOwned):
    source = models.CharField(max_length=20, choices=DeferredSource.choices)
    reason_code = models.CharField(max_length=30, choices=DeferredReason.choices)
    reason = models.TextField(help_text="Why it could not be placed, for people.")
    payload = models.JSONField(help_text="What was received and not placed, as received "
                               "(shown redacted, strict by default, like all ledger content).")
    run_id = models.CharField(max_length=200, blank=True,
                              help_text="The run it belongs to, when there is one.")
    key = models.CharField(
        max_length=300, help_text="What the item is (a record's path, a span, a gap): the same "
        "thing received again is the same item.")
    received_by = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=10, choices=DeferredStatus.choices,
                              default=DeferredStatus.PENDING)
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.SET_NULL, related_name="+")
    resolved_by_label = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    justification = models.TextField(blank=True, help_text="Why it was dismissed.")
    applied_records = models.JSONField(
        default=list, blank=True, help_text="The ledger records it became when applied: "
        "[{kind, id}].")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"],
                                               name="deferred_item_unique_per_tenant")]
        indexes = [models.Index(fields=["tenant", "status", "source"],
                                name="deferred_tenant_status"),
                   models.Index(fields=["tenant", "run_id"], name="deferred_tenant_run")]
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"deferred {self.pk}: {self.reason_code} ({self.status})"
