"""Signed tenant digests: the run heads of a tenant, chained over time (the CloudTrail idea).

A digest commits to the head (``last_seq``, ``head_hash``) of every run whose chain moved since
the previous digest, and to the previous digest's hash; it is signed with the portal's Ed25519
key. Dropping a run's tail, or rewriting a chain and its head together, then disagrees with a
signed digest.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.db import models

from core.canonical import canonical_timestamp
from core.models import TenantOwned

from .base import AppendOnly, LedgerQuerySet


class TenantDigest(TenantOwned, AppendOnly):
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="digests")
    number = models.PositiveIntegerField()
    created_at = models.DateTimeField()
    covered_until = models.DateTimeField(
        help_text="Run heads that moved before this time are in this digest or an earlier one.")
    run_heads = models.JSONField(help_text="run_id -> [last_seq, head_hash]")
    governance = models.JSONField(default=dict, blank=True, help_text="Sealed governance "
                                  "records: kind -> {upto, count, head} (runs/governance_seal.py)")
    previous_hash = models.CharField(max_length=64)
    digest_hash = models.CharField(max_length=64)
    signature = models.TextField()
    public_key = models.CharField(max_length=64)
    key_id = models.CharField(max_length=16)

    objects = LedgerQuerySet.as_manager()  # type: ignore[misc]  # narrower than TenantOwned's

    class Meta:
        ordering = ["tenant", "number"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "number"], name="digest_number_per_tenant")
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id} digest #{self.number}"

    def signed_content(self, tenant_slug: str) -> dict[str, Any]:
        return {
            "kind": "tenant_digest",
            "tenant": tenant_slug,
            "number": self.number,
            "created_at": canonical_timestamp(self.created_at),
            "covered_until": canonical_timestamp(self.covered_until),
            "run_heads": self.run_heads,
            "previous_hash": self.previous_hash,
            # left out while empty: digests sealed before it existed verify as they were signed
            **({"governance": self.governance} if self.governance else {}),
        }


class IntegrityAlarm(TenantOwned, AppendOnly):
    """A run head the digest sealer refused to sign: it differs from what an earlier digest
    signed for the same run (rewritten, or its tail dropped), so signing it would launder the
    change. Raised once per forged head; shown in the admin, the API and ``ledger verify``."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="integrity_alarms")
    run_id = models.CharField(max_length=200)
    seq = models.PositiveIntegerField(help_text="The head's sequence number now.")
    found_head = models.CharField(max_length=64, help_text="The head the sealer refused.")
    signed_seq = models.PositiveIntegerField()
    signed_head = models.CharField(max_length=64)
    digest_number = models.PositiveIntegerField(help_text="The digest that signed the old head.")
    detail = models.TextField()
    raised_at = models.DateTimeField(auto_now_add=True)

    objects = LedgerQuerySet.as_manager()  # type: ignore[misc]  # narrower than TenantOwned's

    class Meta:
        ordering = ["-raised_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "run_id", "found_head"],
                                    name="one_alarm_per_forged_head")
        ]

    def __str__(self) -> str:
        return f"integrity alarm: run {self.run_id}: {self.detail}"


class CommitmentKey(TenantOwned):
    """A tenant's key for the commitments its redacted outputs show where the ledger keeps a
    hash (``runs/commitments.py``). One key is current; a rotated one is kept, retired, so the
    commitments it made stay checkable by whoever is given it."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="commitment_keys")
    generation = models.PositiveIntegerField()
    secret = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)


    class Meta:
        ordering = ["tenant", "-generation"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "generation"],
                                    name="commitment_key_generation_per_tenant"),
            models.UniqueConstraint(fields=["tenant"], condition=models.Q(retired_at=None),
                                    name="one_current_commitment_key_per_tenant"),
        ]

    def __str__(self) -> str:
        return f"commitment key {self.key_id}"

    @property
    def key_id(self) -> str:
        """Generation and fingerprint: names the key without saying anything about it."""
        return f"{self.generation}:{hashlib.sha256(bytes(self.secret)).hexdigest()[:16]}"
