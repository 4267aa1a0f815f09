"""What the API, the page and the CLI show of an incident (one shape, built in one place)."""

from __future__ import annotations

from typing import Any

from policies.services import FREEZE_POLICY
from runs.redaction import Redactor
from runs.services import redactor_for

from ..content import shown_content
from ..models import Incident
from ..services import incident_timeline


def _event(data: dict[str, Any]) -> str:
    # freeze_tool (policies) writes its own incident link, without an event name
    if not data.get("event") and data.get("policy") == FREEZE_POLICY:
        return "freeze"
    return str(data.get("event", ""))


def incident_row(incident: Incident, redactor: Redactor | None = None) -> dict[str, Any]:
    content = shown_content(incident, redactor)
    return {
        "id": incident.pk, "reference": incident.reference, "tenant": incident.tenant.slug,
        "title": content["title"], "severity": incident.severity, "status": incident.status,
        "remediation_status": incident.remediation_status, "ticket_ids": content["ticket_ids"],
        "opened_by": incident.opened_by_label, "opened_at": incident.opened_at,
        "mitigated_at": incident.mitigated_at, "closed_at": incident.closed_at,
    }


def incident_detail(incident: Incident, viewer: Any, redaction: str | None = None
                    ) -> dict[str, Any]:
    """The incident with its links and its timeline, annotations redacted for ``viewer``."""
    redactor = redactor_for(viewer, incident.tenant_id, redaction,
                            viewing=f"incident {incident.pk} (API)")
    versions = [{"id": pk, "policy": name, "version": number, "status": status,
                 "freeze": name == FREEZE_POLICY}
                for pk, name, number, status in incident.policy_versions.order_by(
                    "policy__name", "number").values_list("pk", "policy__name", "number",
                                                          "status")]
    timeline = []
    for note in incident_timeline(incident):
        row = redactor.redact_row("annotation", {
            "annotation_id": note.annotation_id, "kind": note.annotation_kind,
            "event": _event(note.data or {}), "body": note.body, "data": note.data,
            "run_id": note.run.run_id, "target_call_id": note.target_call_id,
            "author": note.author_label, "recorded_at": note.recorded_at})
        timeline.append(row)
    return {
        **incident_row(incident, redactor.redactor),
        "summary": shown_content(incident, redactor.redactor)["summary"],
        "runs": sorted(incident.runs.values_list("run_id", flat=True)),
        "tool_calls": [{"call_id": c, "tool": t, "action_class": a, "run_id": r}
                       for c, t, a, r in incident.tool_calls.order_by("id").values_list(
                           "call_id", "tool__name", "action_class", "run__run_id")],
        "policy_versions": versions,
        "replays": [{"id": pk, "run_id": run_id, "mode": mode, "status": status,
                     "divergent_steps": divergent}
                    for pk, run_id, mode, status, divergent in incident.replays.order_by(
                        "id").values_list("pk", "run__run_id", "mode", "status",
                                          "divergent_steps")],
        "rollbacks": [{"id": pk, "call_id": call_id, "status": status}
                      for pk, call_id, status in incident.rollbacks.order_by("id").values_list(
                          "pk", "tool_call__call_id", "status")],
        "escalated_calls": incident.escalated_call_ids,
        "last_escalated_at": incident.last_escalated_at,
        "timeline": timeline,
        "redaction": redactor.level,
    }
