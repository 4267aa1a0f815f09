"""Incidents: the record an incident responder keeps, linking what the ledger shows.

An incident links runs, tool calls and policy versions (freezes among them); rollbacks and
replays point at it. Its timeline is the ledger itself: every change the services make is an
annotation whose ``data["incident"]`` is the incident's reference, on the run it concerns (or
the tenant's governance log), so the incident and the runs tell the same story.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from simple_history.models import HistoricalRecords

from core.history import history_user
from core.models import TenantOwned

from .choices import CLOSING_REMEDIATIONS, IncidentStatus, Remediation, Severity

__all__ = ["CLOSING_REMEDIATIONS", "Incident", "IncidentStatus", "Remediation", "Severity"]


class Incident(TenantOwned):
    tenant = models.ForeignKey("ledger_portal.Tenant", on_delete=models.PROTECT,
                               related_name="incidents")
    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True)
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.MEDIUM)
    status = models.CharField(max_length=9, choices=IncidentStatus.choices,
                              default=IncidentStatus.OPEN)
    remediation_status = models.CharField(max_length=14, choices=Remediation.choices,
                                          default=Remediation.NONE)
    ticket_ids = models.JSONField(default=list, blank=True,
                                  help_text="External ticket / incident ids (e.g. JIRA-12).")
    runs = models.ManyToManyField("runs.Run", blank=True, related_name="incidents")
    tool_calls = models.ManyToManyField("runs.ToolCall", blank=True, related_name="incidents")
    replays = models.ManyToManyField("operations.Replay", blank=True, related_name="incidents",
                                     help_text="Replays run to investigate or check a fix.")
    policy_versions = models.ManyToManyField("policies.PolicyVersion", blank=True,
                                             related_name="incidents",
                                             help_text="Versions involved, freezes included.")
    opened_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.PROTECT, related_name="+")
    opened_by_label = models.CharField(max_length=200, blank=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    mitigated_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    closed_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True,
                                  on_delete=models.PROTECT, related_name="+")
    last_escalated_at = models.DateTimeField(null=True, blank=True)
    escalated_call_ids = models.JSONField(
        default=list, blank=True, editable=False,
        help_text="Write/delete/exfil calls security and data owners were told about.")

    history = HistoricalRecords(excluded_fields=["escalated_call_ids"], get_user=history_user)

    class Meta:
        ordering = ["-opened_at", "-id"]
        indexes = [models.Index(fields=["tenant", "status", "-opened_at"],
                                name="incident_tenant_status")]

    def __str__(self) -> str:
        return f"{self.reference}: {self.title}"

    @property
    def reference(self) -> str:
        """How the ledger names this incident (annotations' ``data["incident"]``)."""
        return f"incident-{self.pk}"

    @property
    def is_closed(self) -> bool:
        return self.status == IncidentStatus.CLOSED
