"""Keyed commitments: what a redacted output shows where the ledger keeps a hash.

The ledger's ``content_hash`` and ``chain_hash`` are unsalted SHA-256 over the unredacted
record, so that anyone can recompute them. Shown next to a redacted field they undo the
redaction for whoever can enumerate the field's likely values: a card number with a known BIN
and last four is about 10^5 Luhn-valid guesses, confirmed offline in a second. Every output
below the ``none`` level therefore carries, instead of each hash, an HMAC-SHA256 under the
tenant's commitment key:

- ``record``: ``HMAC(k, "record:" + content_hash)``;
- ``chain``:  ``HMAC(k, "chain:" + chain_hash)`` (a run's ``head``: the same over its head);
- ``fields``: ``HMAC(k, "field:<name>:" + canonical JSON of the raw value)``, for each field
  the redaction changed.

Without the key these say nothing about the content. With it (the portal, or an auditor handed
it under ``view_unredacted``, a disclosure the governance log records) each one is recomputed
from the unredacted record, so a redacted output still ties to the chain the portal verifies.
A rotated key is retired, not deleted: commitments already handed out stay checkable.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, router, transaction
from django.utils import timezone

from core.actors import Actor
from core.canonical import canonical_json
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role

from .annotations import annotate
from .models import AnnotationKind, CommitmentKey

__all__ = ["HASH_FIELDS", "Committer", "commitment_key", "committer_for",
           "disclose_commitment_key", "rotate_commitment_key"]

# Hash columns of ledger rows and alarms, and the name of the commitment each becomes.
HASH_FIELDS = {"content_hash": "record", "chain_hash": "chain", "head_hash": "head",
               "found_head": "found_head", "signed_head": "signed_head",
               "action_hash": "action"}
# What each hash column commits to: a record's content, or a link of a chain (a run's head and
# an integrity alarm's heads are links too, so they match the ``chain`` of the record they are).
_LABELS = {"content_hash": "record", "chain_hash": "chain", "head_hash": "chain",
           "found_head": "chain", "signed_head": "chain", "action_hash": "action",
           "record_hash": "removal"}


def commitment_key(tenant: Tenant | int) -> CommitmentKey:
    """The tenant's current key, made on first use."""
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    # read where it is made, even in a stale-ok block (core/db_routing.py): a key made or
    # rotated a moment ago is on the primary only
    keys = CommitmentKey.objects.db_manager(router.db_for_write(CommitmentKey))
    current = keys.filter(tenant_id=tenant_id, retired_at=None).first()
    if current is not None:
        return current
    try:
        with transaction.atomic(using=keys.db):
            return keys.create(tenant_id=tenant_id, generation=1,
                               secret=secrets.token_bytes(32))
    except IntegrityError:  # made by a concurrent reader meanwhile
        return keys.get(tenant_id=tenant_id, retired_at=None)


def rotate_commitment_key(tenant: Tenant, *, by: Actor) -> CommitmentKey:
    """Retire the current key and make the next generation, annotated in the governance log.
    Outputs from now on commit under the new key; nothing stored changes."""
    with transaction.atomic():
        old = commitment_key(tenant)
        old = CommitmentKey.objects.select_for_update().get(pk=old.pk)
        if old.retired_at is not None:  # rotated concurrently: rotate what is current now
            return rotate_commitment_key(tenant, by=by)
        old.retired_at = timezone.now()
        old.save(update_fields=["retired_at"])
        new = CommitmentKey.objects.create(tenant=tenant, generation=old.generation + 1,
                                           secret=secrets.token_bytes(32), created_by=str(by))
        annotate(tenant, AnnotationKind.CONFIGURATION,
                 f"{by} rotated the commitment key: {old.key_id} retired, {new.key_id} current",
                 by=by, data={"event": "commitment_key_rotated", "retired": old.key_id,
                              "current": new.key_id, "generation": new.generation})
    return new


def disclose_commitment_key(tenant: Tenant, *, by: Actor, generation: int | None = None
                            ) -> CommitmentKey:
    """A key handed to a ``view_unredacted`` reader (an auditor checking commitments), recorded
    as a disclosure. Raises ``PermissionDenied`` without the role."""
    if not has_role(by, Role.VIEW_UNREDACTED, tenant.pk):
        raise PermissionDenied("the commitment key needs the view_unredacted role: with it, "
                               "every redacted value can be tested against a guess")
    key = (commitment_key(tenant) if generation is None
           else CommitmentKey.objects.get(tenant=tenant, generation=generation))
    with transaction.atomic():
        annotate(tenant, AnnotationKind.DISCLOSURE,
                 f"{by} was given the commitment key {key.key_id}", by=by,
                 data={"event": "commitment_key_disclosed", "key": key.key_id})
    return key


class Committer:
    """Commitments under one key; build it once per output."""

    def __init__(self, key: CommitmentKey) -> None:
        self.key_id = key.key_id
        self._secret = bytes(key.secret)

    def commit(self, label: str, value: str) -> str:
        return hmac.digest(self._secret, f"{label}:{value}".encode(), "sha256").hex()

    def of_row(self, raw: dict[str, Any], shown: dict[str, Any],
               fields: tuple[str, ...]) -> dict[str, Any]:
        """``shown`` (the redacted copy of ``raw``) with its hash columns emptied and a
        ``commitment`` in their place (none when it has no hash and nothing was redacted)."""
        commitment: dict[str, Any] = {"key": self.key_id}
        for column, name in HASH_FIELDS.items():
            if column in shown:
                value = shown[column]
                shown[column] = None
                if value:
                    commitment[name] = self.of_hash(column, value)
        changed = {name: self.commit(f"field:{name}", canonical_json(raw[name]).decode())
                   for name in fields if name in raw and shown.get(name) != raw[name]}
        if changed:
            commitment["fields"] = changed
        if len(commitment) > 1:
            shown["commitment"] = commitment
        return shown

    def of_hash(self, column: str, value: str) -> str:
        """The commitment to the hash in ``column`` (``content_hash``, ``found_head``...)."""
        return self.commit(_LABELS[column], value)

    def as_text(self, column: str, value: str) -> str:
        """The commitment in place of a hash on a page: says what it is and under which key."""
        return f"hmac {self.of_hash(column, value)} (commitment key {self.key_id})"


def committer_for(tenant_id: int) -> Committer:
    return Committer(commitment_key(tenant_id))
