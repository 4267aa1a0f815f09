"""Retention: legal holds that keep runs, and the signed records of what retention removed.

A removal record lists every run it removed with the head it had (``last_seq``, ``head_hash``)
and how many records went with it, chains to the previous removal record and is signed with the
portal's key. Verification then tells a run removed by retention from a run that vanished.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from core.canonical import canonical_timestamp
from core.history import history_user
from core.models import TenantOwned

from .base import AppendOnly, LedgerQuerySet


class LegalHold(TenantOwned):
    """Keeps a run (or, with no run, every run of the tenant) past its retention period until
    the hold is released."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="legal_holds")
    run_id = models.CharField(max_length=200, blank=True,
                              help_text="Empty: the hold covers every run of the tenant.")
    reason = models.TextField(help_text="Why the records must be kept (matter, ticket).")
    placed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                  related_name="+")
    placed_at = models.DateTimeField(auto_now_add=True)
    released_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                    on_delete=models.PROTECT, related_name="+")
    released_at = models.DateTimeField(null=True, blank=True)

    history = HistoricalRecords(get_user=history_user)

    class Meta:
        ordering = ["tenant", "-placed_at"]
        indexes = [models.Index(fields=["tenant", "released_at"], name="hold_tenant_active")]

    def __str__(self) -> str:
        return f"hold on {self.run_id or 'every run'}"

    @property
    def active(self) -> bool:
        return self.released_at is None


class RemovalRecord(TenantOwned, AppendOnly):
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="removal_records")
    number = models.PositiveIntegerField()
    removed_at = models.DateTimeField()
    cutoff = models.DateTimeField(help_text="Closed runs that ended before this were due.")
    retention_days = models.PositiveIntegerField()
    removed_runs = models.JSONField(help_text="run_id -> [last_seq, head_hash, records]")
    records = models.PositiveIntegerField(help_text="Ledger records removed, runs included.")
    previous_hash = models.CharField(max_length=64)
    record_hash = models.CharField(max_length=64)
    signature = models.TextField()
    public_key = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16)

    objects = LedgerQuerySet.as_manager()  # type: ignore[misc]  # narrower than TenantOwned's

    class Meta:
        ordering = ["tenant", "number"]
        constraints = [models.UniqueConstraint(fields=["tenant", "number"],
                                               name="removal_number_per_tenant")]

    def __str__(self) -> str:
        return f"removal #{self.number} ({len(self.removed_runs)} runs)"

    def signed_content(self, tenant_slug: str) -> dict[str, Any]:
        return {
            "kind": "retention_removal",
            "tenant": tenant_slug,
            "number": self.number,
            "removed_at": canonical_timestamp(self.removed_at),
            "cutoff": canonical_timestamp(self.cutoff),
            "retention_days": self.retention_days,
            "removed_runs": self.removed_runs,
            "records": self.records,
            "previous_hash": self.previous_hash,
        }
