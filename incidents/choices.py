"""Incident vocabularies (importable before Django is set up, e.g. by the CLI parser)."""

from __future__ import annotations

from django.db import models


class Severity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class IncidentStatus(models.TextChoices):
    OPEN = "open"
    MITIGATED = "mitigated"
    CLOSED = "closed"


class Remediation(models.TextChoices):
    NONE = "none"
    IN_PROGRESS = "in_progress", "in progress"
    REMEDIATED = "remediated"
    ACCEPTED_RISK = "accepted_risk", "accepted risk"
    FALSE_POSITIVE = "false_positive", "false positive"


# The statuses that may close an incident: the runbook's "clear remediation status".
CLOSING_REMEDIATIONS = (Remediation.REMEDIATED, Remediation.ACCEPTED_RISK,
                        Remediation.FALSE_POSITIVE)
