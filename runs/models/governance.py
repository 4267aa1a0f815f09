"""Mutable governance objects of the ledger (with full history)."""

from __future__ import annotations

from typing import Any

from django.db import models
from simple_history.models import HistoricalRecords

from ledger_portal.history import history_user
from ledger_portal.tenancy import TenantScopedQuerySet


class ActionClass(models.TextChoices):
    READ = "read", "read"
    WRITE = "write", "write"
    DELETE = "delete", "delete"
    EXFIL = "exfil", "exfil"


class Agent(models.Model):
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="agents")
    agent_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"], get_user=history_user)
    objects: TenantScopedQuerySet[Any] = TenantScopedQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["tenant", "agent_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "agent_id"],
                                    name="agent_id_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return self.name or self.agent_id


class Tool(models.Model):
    """A tool agents call. Registered on first sight by ingestion; edited by governance."""

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="tools")
    name = models.CharField(max_length=200)
    action_class = models.CharField(max_length=8, choices=ActionClass.choices,
                                    default=ActionClass.READ)
    description = models.TextField(blank=True)
    supports_rollback = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    history = HistoricalRecords(excluded_fields=["updated_at"], get_user=history_user)
    objects: TenantScopedQuerySet[Any] = TenantScopedQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tool_name_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return self.name


class RedactionRule(models.Model):
    """A tenant's own classification of fields, on top of what agents declare.

    ``pattern`` is a field-name glob matched against the last key of a path (``*password*``,
    ``ssn``) or a JSON path starting with ``$.`` (``$.input.customer.email``,
    ``$.messages[*].content``).
    """

    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="redaction_rules")
    pattern = models.CharField(max_length=300)
    label = models.CharField(max_length=12, choices=[
        (label, label) for label in ("public", "internal", "confidential", "restricted",
                                     "secret")])
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    history = HistoricalRecords(get_user=history_user)
    objects: TenantScopedQuerySet[Any] = TenantScopedQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["tenant", "pattern"]
        constraints = [models.UniqueConstraint(fields=["tenant", "pattern"],
                                               name="redaction_rule_unique_per_tenant")]

    def __str__(self) -> str:
        return f"{self.pattern} -> {self.label}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from ..redaction import TenantRule

        try:
            TenantRule(self.pattern, self.label)
        except ValueError as exc:  # a bad rule is a form error, never a 500 on every read
            raise ValidationError({"pattern": str(exc)}) from exc
