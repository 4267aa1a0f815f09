"""Who django-simple-history records as the author of a change."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model


def history_user(request: Any = None, **kwargs: Any) -> Any:
    """The signed-in person, or nobody: an API key is not a user row (its changes, such as
    agents and tools first seen in a batch, say so in their change reason)."""
    user = getattr(request, "user", None)
    return user if isinstance(user, get_user_model()) else None
