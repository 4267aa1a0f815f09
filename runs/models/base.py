"""Append-only ledger rows.

The application refuses to update or delete a ledger row: ``save()`` on a stored row,
``delete()``, and queryset ``update()`` / ``delete()`` raise ``AppendOnlyViolation``. Corrections
are annotations. (On PostgreSQL a trigger enforces the same below the ORM.)
"""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from django.db import models

from core.canonical import canonical_timestamp, chain_hash, content_hash
from core.models import TenantOwned
from core.tenancy import TenantScopedQuerySet

TIMESTAMP_FIELDS = frozenset({"started_at", "ended_at"})


def content_of(kind: str, fields: tuple[str, ...], values: Any,
               optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The canonical content of a record from its plain values (a model or a ``values()`` row
    go through here alike, so what ingestion hashes is what verification recomputes).

    A field in ``optional`` (the model's ``optional_content_fields``) is left out while it is
    empty, so records written before it existed, or without it, hash exactly as before."""
    content: dict[str, Any] = {"kind": kind}
    for name in fields:
        value = values[name]
        if name in optional and is_empty(value):
            continue
        if name in TIMESTAMP_FIELDS and not isinstance(value, str):  # str: already canonical
            value = canonical_timestamp(value)
        content[name] = value
    return content


def is_empty(value: Any) -> bool:
    """Is an optional content field's value empty (left out of the canonical content)?"""
    return value is None or value == ""


_ContentPlan = tuple[tuple[str, tuple[str, ...] | None, bool, bool], ...]


@cache
def _content_plan(model: type[LedgerRecord]) -> _ContentPlan:
    """Each content field of ``model``: (name, the path of a reference, is it a timestamp,
    is it optional: left out while empty)."""
    return tuple((name, tuple(model.content_refs[name].split("__"))
                  if name in model.content_refs else None, name in TIMESTAMP_FIELDS,
                  name in model.optional_content_fields)
                 for name in model.content_fields)


class AppendOnlyViolation(Exception):
    """A ledger row was about to be changed or removed."""


class LedgerQuerySet(TenantScopedQuerySet[Any]):
    def update(self, **kwargs: Any) -> int:
        raise AppendOnlyViolation(f"{self.model.__name__} rows are append-only; annotate instead")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation(f"{self.model.__name__} rows are append-only; annotate instead")

    update.queryset_only = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]


class AppendOnly(models.Model):
    """A row that is written once: saving it again or deleting it raises."""

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AppendOnlyViolation(f"{type(self).__name__} rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AppendOnlyViolation(f"{type(self).__name__} rows are append-only")


class LedgerRecord(TenantOwned, AppendOnly):
    """A row in a run's hash chain: ``seq`` orders it, ``chain_hash`` links it to the one before."""

    kind: ClassVar[str]
    #: the fields the hash commits to, in the record's canonical form
    content_fields: ClassVar[tuple[str, ...]]
    #: content fields that name a related row by its external id: name -> ORM path
    content_refs: ClassVar[dict[str, str]] = {}
    #: content fields added after records were written: in the content only when non-empty
    #: (``is_empty``), so a record without one hashes exactly as it did before the field existed.
    #: Never a reference or a timestamp.
    optional_content_fields: ClassVar[frozenset[str]] = frozenset()

    seq = models.PositiveIntegerField(help_text="Position in the run's chain (the run is 0).")
    content_hash = models.CharField(max_length=64, editable=False)
    chain_hash = models.CharField(max_length=64, editable=False)
    recorded_at = models.DateTimeField(auto_now_add=True, db_index=False)

    objects = LedgerQuerySet.as_manager()  # type: ignore[misc]  # narrower than TenantOwned's

    class Meta:
        abstract = True

    def ledger_content(self) -> dict[str, Any]:
        """The record's content in canonical form: what its hash commits to (``content_of``
        of the record's values, inlined: ingestion computes it for every record)."""
        content: dict[str, Any] = {"kind": self.kind}
        for name, path, timestamp, optional in _content_plan(type(self)):
            value: Any
            if path is None:
                value = getattr(self, name)
            else:
                value = self
                for step in path:
                    value = getattr(value, step)
                    if value is None:
                        break
            if optional and is_empty(value):
                continue
            if timestamp and not isinstance(value, str):
                value = canonical_timestamp(value)
            content[name] = value
        return content

    def seal(self, previous: str) -> str:
        """Compute ``content_hash`` and ``chain_hash`` after ``previous``; return the new link."""
        self.content_hash = content_hash(self.ledger_content())
        self.chain_hash = chain_hash(previous, self.seq, self.content_hash)
        return self.chain_hash
