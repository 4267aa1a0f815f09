"""The demo's story, around its open incident ("Refunds sent twice to the same customer"):

- the run behind it: the support agent refunded order A-1042 twice (a second refund with a
  fresh idempotency key), recorded through the ingestion service as an agent's batch is;
- a sandbox replay of that run, which diverges: the payment provider (the demo's tool server)
  now holds refunds for review, where the ledger recorded them as succeeded;
- a rollback of the duplicate refund, which is partial: the money goes back, but the
  customer's e-mail about the refund cannot be recalled;
- ``send_email`` frozen to sandbox for the incident, and the run, the call and the replay
  linked to it;
- a finished audit export, strict, signed, ready to download and verify offline.

The replay, the rollback and the export are real jobs run here, in this process, through the
functions the Celery tasks run (no worker needs to be up while seeding), against the demo's
tool server. Each piece is made once: seeding again finds it and leaves it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from core.models import Tenant
from exports.models import AuditExport, ExportStatus
from exports.services import produce_now, request_export
from incidents.models import Incident
from incidents.services import freeze_for_incident, link_to_incident
from ledger_portal import demo_tools
from operations.models import Replay, ReplayMode, Rollback
from operations.replay import execute_replay, start_replay
from operations.rollback import attempt_rollback, request_rollback
from policies.services import frozen_tools
from runs.ingest_schema import parse_batch
from runs.models import Run, ToolCall
from runs.sample_runs import TOOLS
from runs.services import ingest_batch

RUN_ID = "acme-refund-1042"
DUPLICATE_REFUND = f"{RUN_ID}-t3.1"
INCIDENT_TITLE = "Refunds sent twice to the same customer"
FROZEN_TOOL = "send_email"
CUSTOMER = {"name": "Grace Hopper", "email": "grace.hopper@example.com",
            "phone": "+1-555-201-1042", "tier": "pro"}
REFUND = {"payment_id": "pay_1042", "order": "A-1042", "amount_cents": 12900,
          "currency": "EUR"}
# (step title, tool, action class, input, idempotency key)
CALLS: list[tuple[str, str, str, dict[str, Any], str]] = [
    ("Look up the customer of ticket T-1042", "get_customer", "read",
     {"ticket": "T-1042", "customer": CUSTOMER}, ""),
    ("Refund order A-1042", "refund_payment", "write", REFUND, "idem-refund-1042-a"),
    ("Refund order A-1042 again (the first answer timed out in the agent)", "refund_payment",
     "write", REFUND, "idem-refund-1042-b"),
    ("Resolve ticket T-1042", "update_ticket", "write",
     {"ticket": "T-1042", "customer": CUSTOMER, "status": "resolved"}, "idem-ticket-1042"),
    ("Tell the customer", "send_email", "exfil",
     {"ticket": "T-1042", "customer": CUSTOMER, "template": "refund_issued"}, "idem-mail-1042"),
]


def _ts(moment: datetime) -> str:
    return moment.isoformat()


def recorded_output(step: int, tool: str, arguments: dict[str, Any]) -> Any:
    """What the tool answered when the run was recorded: today's answer, except that refunds
    went through at once then (each with its own refund id)."""
    output = demo_tools.answer(tool, arguments)
    if tool == "refund_payment":
        output = {**output, "refund_id": f"re_1042_{step}",
                  "status": demo_tools.REFUND_STATUS_RECORDED}
    return output


def story_run(started: datetime) -> dict[str, Any]:
    """The run behind the incident, as the agent's batch records it."""
    steps, calls = [], []
    now = started
    labels = {"input.customer.email": "confidential", "input.customer.phone": "confidential"}
    for n, (title, tool, action_class, arguments, key) in enumerate(CALLS, start=1):
        ended = now + timedelta(milliseconds=700 + 150 * n)
        steps.append({"step_id": f"s{n}", "index": n, "title": title, "status": "done",
                      "started_at": _ts(now), "ended_at": _ts(ended)})
        calls.append({"call_id": f"{RUN_ID}-t{n}.1", "step_id": f"s{n}", "tool": tool,
                      "action_class": action_class, "input": arguments,
                      "output": recorded_output(n, tool, arguments), "status": "succeeded",
                      "started_at": _ts(now), "ended_at": _ts(ended), "idempotency_key": key,
                      "supports_rollback": TOOLS[tool][1],
                      "classifications": labels if "customer" in arguments else {}})
        now = ended
    return {"run_id": RUN_ID, "agent_id": "support-triage", "agent_name": "Support Triage",
            "goal": "Resolve refund request on ticket T-1042", "trigger_ref": "REQ-1042",
            "status": "succeeded", "started_at": _ts(started), "ended_at": _ts(now),
            "metadata": {"framework": "langgraph", "version": "1.4.2"},
            "steps": steps, "tool_calls": calls}


def record_story_run(tenant: Tenant) -> Run:
    if not Run.objects.filter(tenant=tenant, run_id=RUN_ID).exists():
        batch = {"runs": [story_run(timezone.now() - timedelta(minutes=40))]}
        ingest_batch(tenant, parse_batch(batch), recorded_by="demo")
    run: Run = Run.objects.select_related("tenant", "agent").get(tenant=tenant, run_id=RUN_ID)
    return run


def diverging_replay(run: Run, *, by: User) -> Replay:
    """A sandbox replay of ``run``, walked here (the body of the ``run_replay`` task)."""
    replay = Replay.objects.filter(tenant=run.tenant, run=run, mode=ReplayMode.SANDBOX).first()
    if replay is None:
        replay = start_replay(run, by=by, mode=ReplayMode.SANDBOX)
        execute_replay(replay.pk, replay.task_id)
        replay.refresh_from_db()
    return replay


def partial_rollback(run: Run, incident: Incident | None, *, by: User) -> Rollback:
    """The rollback of the duplicate refund, attempted here (the ``run_rollback`` task's body)."""
    call = ToolCall.objects.get(tenant=run.tenant, run=run, call_id=DUPLICATE_REFUND)
    rollback = Rollback.objects.filter(tenant=run.tenant, tool_call=call).first()
    if rollback is None:
        rollback, _ = request_rollback(call, by=by, incident=incident)
        attempt_rollback(rollback.pk)
        rollback.refresh_from_db()
    return rollback


def finished_export(tenant: Tenant, *, by: User) -> AuditExport:
    """A strict export of the last 30 days, produced here (the export tasks' steps)."""
    done = AuditExport.objects.filter(tenant=tenant, status=ExportStatus.DONE).first()
    if done is not None:
        return done
    now = timezone.now()
    export = request_export(tenant, now - timedelta(days=30), now, by=by, enqueue=False)
    return produce_now(export)


def link_incident(incident: Incident, run: Run, replays: list[Replay], *, by: User) -> None:
    if FROZEN_TOOL not in frozen_tools(incident.tenant):
        freeze_for_incident(incident, FROZEN_TOOL, by=by, mode="sandbox")
    link_to_incident(incident, by=by, run_ids=[run.run_id], call_ids=[DUPLICATE_REFUND],
                     replay_ids=[r.pk for r in replays])


def seed_story(tenant: Tenant, *, operator: User, auditor: User, run_jobs: bool) -> list[str]:
    """The story's pieces (jobs only when ``run_jobs``: the demo's tools must answer); what
    was seeded, one line each."""
    run = record_story_run(tenant)
    incident = Incident.objects.filter(tenant=tenant, title=INCIDENT_TITLE,
                                       status="open").first()
    lines = [f"{tenant.slug}: run {run.run_id} (the double refund)"]
    replays: list[Replay] = []
    if run_jobs:
        replay = diverging_replay(run, by=operator)
        rollback = partial_rollback(run, incident, by=operator)
        replays.append(replay)
        lines += [f"  replay {replay.pk}: {replay.status}, {replay.divergent_steps} divergent "
                  f"step(s)",
                  f"  rollback {rollback.pk} of {DUPLICATE_REFUND}: {rollback.status}"]
    if incident is not None:
        link_incident(incident, run, replays, by=operator)
        lines.append(f"  linked to {incident.reference}; {FROZEN_TOOL} frozen to sandbox")
    if run_jobs:
        export = finished_export(tenant, by=auditor)
        lines.append(f"  export {export.pk}: {export.status}, {export.rows_done} records")
    return lines
