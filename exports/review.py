"""Exports under review: while compliance reviews an export, the runs of its window are kept
past retention (a hold source of ``runs.retention``) and its bundle does not expire."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet

from core.actors import Actor
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.models import AnnotationKind, Run

from .models import AuditExport


@transaction.atomic
def set_under_review(export: AuditExport, *, by: Actor, under_review: bool) -> AuditExport:
    """Mark an export under review (or done with); annotated in the governance log."""
    if not has_role(by, Role.EXPORT, export.tenant_id):
        raise PermissionDenied("reviewing exports needs the export role on this tenant")
    export = AuditExport.objects.select_for_update(of=("self",)).select_related("tenant").get(
        pk=export.pk)
    if export.under_review == under_review:
        return export
    export.under_review = under_review
    export.save(update_fields=["under_review"])
    state = "under review: its window is held from retention" if under_review else \
        "no longer under review"
    annotate(export.tenant, AnnotationKind.RETENTION, f"Export {export.pk} "
             f"({export.window_from:%Y-%m-%d} to {export.window_to:%Y-%m-%d}) {state}",
             by=by, data={"export": export.pk, "under_review": under_review})
    return export


def runs_in_exports_under_review(tenant: Tenant, runs: QuerySet[Run], now: datetime) -> Any:
    windows = AuditExport.objects.filter(tenant=tenant, under_review=True).values_list(
        "window_from", "window_to")
    condition = Q()
    for window_from, window_to in windows:  # the runs an export holds, as its sections select
        condition |= Q(started_at__gte=window_from, started_at__lt=window_to)
    return runs.filter(condition).values_list("pk", flat=True) if condition else []
