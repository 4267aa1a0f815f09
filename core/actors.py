"""Who is acting, told apart in one place.

A service's ``by`` is a portal user (in the admin or on a page; a ``CliActor`` when the
``ledger`` command acts through a personal access token or in local mode), an agent's API key
(``ApiKeyPrincipal`` on an API request), or None when the portal itself acts (a beat task, a
watchdog). Records name the person as a foreign key where there is one and always carry a label,
so a key's or the portal's action is never attributed to a person.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib.auth.models import User

if TYPE_CHECKING:
    from .models import ApiKey

PORTAL_LABEL = "ledger-portal"


def person_of(by: object) -> User | None:
    """The portal user acting, or None for an agent's key, an anonymous request or the portal."""
    return by if isinstance(by, User) and by.pk is not None else None


def is_person(by: object, user_id: int | None) -> bool:
    """Whether ``by`` is the person ``user_id`` (four-eyes checks: the author, the requester)."""
    person = person_of(by)
    return person is not None and user_id is not None and person.pk == user_id


def key_of(by: object) -> ApiKey | None:
    """The API key an agent's request authenticated with, or None."""
    key: ApiKey | None = getattr(by, "api_key", None)
    return key


def label_of(by: object, default: str = PORTAL_LABEL) -> str:
    """How a record names who acted: the user (with how they came in), the key, or ``default``
    when the portal itself acts."""
    return str(by) if by is not None else default
