"""What a page says about a job that sits queued (``core.workers``)."""

from __future__ import annotations

from typing import Any

from django import template

from core.workers import stuck_message

register = template.Library()


@register.filter
def queued_hint(job: Any) -> str:
    """For a job still queued a while with no worker alive: who should be picking it up."""
    if getattr(job, "status", "") != "queued" or getattr(job, "created_at", None) is None:
        return ""
    return stuck_message(job.created_at)
