"""Celery tasks of the ledger: thin, by id, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from core.models import Tenant

from .integrity import seal_tenant_digest


@shared_task(name="runs.seal_tenant_digests")
def seal_tenant_digests() -> dict[str, int]:
    """Beat task: sign a digest for every tenant whose run heads moved (the CloudTrail idea)."""
    sealed: dict[str, int] = {}
    for tenant_id, slug in Tenant.objects.values_list("pk", "slug"):
        digest = seal_tenant_digest(Tenant(pk=tenant_id, slug=slug))
        if digest is not None:
            sealed[slug] = digest.number
    return sealed


@shared_task(name="runs.apply_retention")
def apply_retention() -> dict[str, int]:
    """Beat task: remove, for every tenant with a retention period, the closed runs past it
    that nothing holds (each batch leaves a signed removal record)."""
    from django.utils import timezone

    from core.partitions import drop_empty_partitions

    from .retention import apply_retention as apply_to_tenant
    from .retention_months import remove_due_months

    now = timezone.now()
    removed: dict[str, int] = {}
    # past months whose every run is due go whole, whatever tenants they hold (PostgreSQL)
    for month in remove_due_months(now):
        for slug, runs in month.runs_by_tenant.items():
            removed[slug] = removed.get(slug, 0) + runs
    for tenant in Tenant.objects.filter(retention_days__isnull=False):
        removed[tenant.slug] = (removed.get(tenant.slug, 0)
                                + apply_to_tenant(tenant, now, months=False).removed_runs)
    # a past month whose every record is now gone: its partitions go whole (PostgreSQL)
    drop_empty_partitions()
    return removed


@shared_task(name="runs.assemble_idle_otel_traces")
def assemble_idle_otel_traces() -> dict[str, int]:
    """Beat task: OpenTelemetry traces quiet for LEDGER_OTLP_QUIET_SECONDS move on (pending ones
    are recorded as running runs, open ones closed)."""
    from .otlp.services import assemble_idle_traces

    return assemble_idle_traces()


@shared_task(name="runs.defer_orphan_otel_events")
def defer_orphan_otel_events() -> int:
    """Beat task: GenAI events whose span never came stop waiting and become deferred items."""
    from .otlp.logs import defer_orphan_events

    return defer_orphan_events()
