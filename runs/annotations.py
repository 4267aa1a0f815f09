"""Annotations written by the portal for manual interventions, chained like any record.

Interventions about a run are appended to that run's chain (closed or not); tenant-wide ones
(policy publications, approvals of calls not yet recorded, ...) go to the tenant's governance
log, a run of its own (``governance``) that is created on first use.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from core.actors import Actor, label_of, person_of
from core.governance_record import PORTAL_AGENT_ID
from core.models import Tenant

from .ingest_schema import parse_batch
from .models import Annotation, Run

GOVERNANCE_RUN_ID = "governance"


def governance_run(tenant: Tenant) -> Run:
    run = Run.objects.filter(tenant=tenant, run_id=GOVERNANCE_RUN_ID).first()
    if run is None:
        from .ingest import ingest_batch

        ingest_batch(tenant, parse_batch({"runs": [{
            "run_id": GOVERNANCE_RUN_ID, "agent_id": PORTAL_AGENT_ID,
            "agent_name": "ledger-portal",
            "goal": "Governance log: policy changes, approvals and other manual interventions",
            "started_at": timezone.now().isoformat()}]}), recorded_by=PORTAL_AGENT_ID)
        run = Run.objects.get(tenant=tenant, run_id=GOVERNANCE_RUN_ID)
    return run


@transaction.atomic
def annotate(tenant: Tenant, kind: str, body: str, *, run_id: str = "", data: Any = None,
             by: Actor | str = None, target_call_id: str = "") -> Annotation:
    """Append an annotation to ``run_id``'s chain (or the governance log, when the run is not
    recorded), in the caller's transaction. ``by`` is who acted, or the label a job recorded
    for whoever asked for it (a replay's or rollback's requester)."""
    run = Run.objects.filter(tenant=tenant, run_id=run_id).first() if run_id else None
    if run is None:
        run = governance_run(tenant)
    run = Run.objects.select_for_update(of=("self",)).select_related("agent", "replay_of").get(
        pk=run.pk)
    note = Annotation(tenant=tenant, run=run, seq=run.last_seq + 1, annotation_kind=kind,
                      body=body, data=data or {}, target_call_id=target_call_id,
                      author=person_of(by), author_label=label_of(by))
    head = note.seal(run.head_hash)
    note.save()
    Run.objects.advance_tip(run.pk, last_seq=note.seq, head_hash=head)
    return note
