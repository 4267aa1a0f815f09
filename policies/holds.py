"""Governance's hold on the ledger's retention: a run a governed exception in force was granted
for is kept (``runs.retention`` asks every registered hold source before removing a run)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from core.models import Tenant
from runs.models import Run

from .models import Decision, ExceptionStatus


def runs_under_governed_exceptions(tenant: Tenant, runs: QuerySet[Run], now: datetime) -> Any:
    in_force = Decision.objects.filter(tenant=tenant, exception__status=ExceptionStatus.ACTIVE,
                                       exception__ends_at__gt=now)
    return runs.filter(run_id__in=in_force.values("run_id")).values_list("pk", flat=True)
