"""What apps above the ledger add to a run's timeline page.

The ledger renders the run; an app that acts on runs (operations: its replays, the roll back
buttons) registers a panel here from its ``AppConfig.ready``, so the ledger never imports it.
A panel returns extra template context; ``rollbacks`` (a ``RollbackControls``) also puts
each call's rollback (and, for operators, the buttons) on the timeline's rows. A panel shows
agent content only through the page's ``redaction``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest

from .services import ViewerRedaction

#: ``panel(request, tenant_slug, run, redaction)`` -> context; ``run`` is the timeline's row of
#: the run, ``redaction`` the reader's.
TimelinePanel = Callable[[HttpRequest, str, dict[str, Any], ViewerRedaction], dict[str, Any]]

_panels: list[TimelinePanel] = []


def register_timeline_panel(panel: TimelinePanel) -> TimelinePanel:
    if panel not in _panels:
        _panels.append(panel)
    return panel


def panel_context(request: HttpRequest, tenant: str, run: dict[str, Any],
                  redaction: ViewerRedaction) -> dict[str, Any]:
    context: dict[str, Any] = {}
    for panel in _panels:
        context.update(panel(request, tenant, run, redaction))
    return context
