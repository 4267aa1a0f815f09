"""Per-tenant roles: django-guardian object permissions on ``Tenant``.

API key scopes use the same names, so one check serves people and agents alike.
"""

from django.db import models


class Role(models.TextChoices):
    VIEW_LEDGER = "view_ledger", "View the ledger"
    APPROVE = "approve", "Approve HITL requests"
    MANAGE_POLICIES = "manage_policies", "Manage policies, agents and tools"
    OPERATE = "operate", "Operate: replay, roll back, freeze"
    EXPORT = "export", "Request and download audit exports"
    INGEST = "ingest", "Record runs (agents)"
    VIEW_CONFIDENTIAL = "view_confidential", "See personal data (standard redaction)"
    VIEW_UNREDACTED = "view_unredacted", "See everything unredacted"


def tenant_perm(role: str) -> str:
    """The full permission name guardian expects, e.g. ``ledger_portal.view_ledger``."""
    return f"ledger_portal.{role}"
