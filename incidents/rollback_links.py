"""How rollbacks (operations, below this app) find an incident and link a compensated call to
it: registered with ``operations.rollback`` by ``IncidentsConfig.ready``."""

from __future__ import annotations

from core.actors import Actor
from core.roles import Role
from runs.models import ToolCall

from .models import Incident
from .services import link_to_incident


class IncidentRollbackLinks:
    def find(self, incident_id: int, *, by: Actor) -> Incident | None:
        return Incident.objects.for_user(by, Role.VIEW_LEDGER).filter(pk=incident_id).first()

    def link_call(self, incident: Incident, call: ToolCall, *, by: Actor) -> None:
        if not incident.tool_calls.filter(pk=call.pk).exists():
            link_to_incident(incident, by=by, call_ids=[call.call_id])
