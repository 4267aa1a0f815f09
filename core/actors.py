"""Who is acting, told apart in one place.

A service's ``by`` is a portal user (in the admin or on a page; a ``CliActor`` when the
``ledger`` command acts through a personal access token or in local mode), an agent's API key
(``ApiKeyPrincipal`` on an API request), or None when the portal itself acts (a beat task, a
watchdog). Records name the person as a foreign key where there is one and always carry a label,
so a key's or the portal's action is never attributed to a person.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

# The user model is imported where it is used: the ``ledger`` command imports this module (for
# ``Actor``) while it builds its parser, before it sets Django up.
if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User
    from rest_framework.request import Request

    from .models import ApiKey

PORTAL_LABEL = "ledger-portal"


class ApiKeyPrincipal:
    """Who a request authenticated with an API key acts as."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_superuser = False
    is_staff = False
    pk = None
    id = None

    def __init__(self, key: ApiKey) -> None:
        self.api_key = key
        self.api_key_tenant_id: int = key.tenant_id
        self.scopes = frozenset(key.scopes)
        self.agent_ids: frozenset[str] | None = frozenset(key.agent_ids) or None
        self.username = f"apikey:{key.tenant.slug}/{key.name}"

    def __str__(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False


def person_of(by: object) -> User | None:
    """The portal user acting, or None for an agent's key, an anonymous request or the portal."""
    from django.contrib.auth.models import User

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


#: Who a service acts for: a portal user (a ``CliActor`` when the ``ledger`` command acts), an
#: agent's API key (``ApiKeyPrincipal``), or None when the portal itself acts.
Actor: TypeAlias = "User | ApiKeyPrincipal | None"
#: Whose scope a read is narrowed to: an actor, or an anonymous request (which sees nothing).
Viewer: TypeAlias = "User | ApiKeyPrincipal | AnonymousUser | None"


def acting(viewer: Viewer) -> Actor:
    """A viewer as an actor: an anonymous request acts as nobody."""
    from django.contrib.auth.models import User

    return viewer if isinstance(viewer, User | ApiKeyPrincipal) else None


def actor_of(request: HttpRequest | Request) -> Actor:
    """Who acts on this request, taken once from its authentication: the signed-in user or the
    API key's principal. Pages and the admin are behind a login, so an anonymous request that
    reaches a service is refused here rather than acted on as nobody."""
    from django.contrib.auth.models import User

    user: Any = request.user
    if isinstance(user, User | ApiKeyPrincipal) and user.is_authenticated:
        return user
    raise PermissionDenied("sign in first")
