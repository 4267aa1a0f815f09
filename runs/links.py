"""Links to a run's pages that never fail on an id stored before ids were restricted."""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse


def timeline_url(tenant_slug: str, run_id: str) -> str:
    """The run's timeline, or ``""`` when its id cannot form one (a ``/`` in a legacy id):
    such a run is still listed, it just has no link, never a page that answers 500."""
    try:
        return reverse("run-timeline", args=[tenant_slug, run_id])
    except NoReverseMatch:
        return ""
