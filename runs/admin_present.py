"""Ledger content on admin pages, as the viewing person may see it: content fields through the
redaction engine (markers as labelled text), hash columns as commitments. Registered with the
core's admin base by ``RunsConfig.ready``."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from .redaction import marker_texts
from .services import ViewersByTenant


def viewer_for(request: HttpRequest, tenant_id: int) -> Any:
    """The person's (strict) redaction on ``tenant_id``, made once per request."""
    if "_viewers" not in request.__dict__:
        request.__dict__["_viewers"] = ViewersByTenant(request.user)
    return request.__dict__["_viewers"](tenant_id)


def present_for_viewer(request: HttpRequest, obj: Any, content_fields: tuple[str, ...],
                       hash_fields: tuple[str, ...]) -> Any:
    viewer = viewer_for(request, obj.tenant_id)
    labels = getattr(obj, "classifications", None) or None
    for name in content_fields:
        value = getattr(obj, name)
        if value in (None, "", {}, []):
            continue
        setattr(obj, name, marker_texts(viewer.redactor.redact(value, name, labels)))
    for name in hash_fields:
        value = getattr(obj, name, "")
        if value and viewer.committer is not None:
            setattr(obj, name, viewer.committer.as_text(name, value))
    return obj
