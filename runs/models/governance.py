"""Mutable governance objects of the ledger (with full history)."""

from __future__ import annotations

from typing import Any

from django.db import models
from simple_history.models import HistoricalRecords

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

    history = HistoricalRecords(excluded_fields=["updated_at"])
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

    history = HistoricalRecords(excluded_fields=["updated_at"])
    objects: TenantScopedQuerySet[Any] = TenantScopedQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        ordering = ["tenant", "name"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="tool_name_unique_per_tenant")
        ]

    def __str__(self) -> str:
        return self.name
