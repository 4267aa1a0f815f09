"""What readers see of an incident's own words (title, summary, ticket ids): people write them
from what agents did, so every face (API, pages, CLI, notifications) shows them redacted."""

from __future__ import annotations

from typing import Any

from runs.redaction import Redactor, as_text
from runs.services import redactor_for

from .models import Incident


def shown_content(incident: Incident, redactor: Redactor | None = None) -> dict[str, Any]:
    """The incident's title, summary and ticket ids as a reader sees them: people write them
    from what agents did, so they are redacted like ledger content (strict without
    ``redactor``), markers as their text."""
    if redactor is None:
        redactor = redactor_for(None, incident.tenant_id).redactor
    shown = redactor.redact_fields({"title": incident.title, "summary": incident.summary,
                                    "ticket_ids": list(incident.ticket_ids)},
                                   ("title", "summary", "ticket_ids"))
    return {"title": as_text(shown["title"]), "summary": as_text(shown["summary"]),
            "ticket_ids": [as_text(t) for t in shown["ticket_ids"]]}
