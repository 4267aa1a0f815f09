"""Governed exceptions: scoped, justified, time-bound overrides of a policy version.

The requester cannot grant their own exception; an exception that can cover exfil calls
(``action_class`` exfil or any) needs a second grantor. A decision an exception overrides
records it, and an exception applies only within its window and to the version it names.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from core.actors import Actor, is_person, person_of
from core.models import Tenant
from core.roles import Role
from core.tenancy import has_role
from runs.annotations import annotate
from runs.models import AnnotationKind

from .models import Effect, ExceptionStatus, GovernedException, PolicyVersion, VersionStatus


class ExceptionError(ValidationError):
    pass


# An operator asks for an exception (an incident needs a frozen tool back); a governor grants.
REQUESTER_ROLES = (Role.OPERATE, Role.MANAGE_POLICIES)


def _needs_second_grantor(exc: GovernedException) -> bool:
    return exc.action_class in ("exfil", "")


@transaction.atomic
def request_exception(tenant: Tenant, *, by: Actor, tool: str, policy_version: PolicyVersion,
                      justification: str, starts_at: datetime, ends_at: datetime,
                      effect: str = Effect.ALLOW, agent_id: str = "",
                      action_class: str = "") -> GovernedException:
    if not any(has_role(by, role, tenant.pk) for role in REQUESTER_ROLES):
        raise PermissionDenied("requesting an exception needs the operate or the "
                               "manage_policies role on the tenant")
    if not justification.strip():
        raise ExceptionError("a governed exception needs a justification")
    if ends_at <= starts_at:
        raise ExceptionError("an exception ends after it starts")
    if policy_version.tenant_id != tenant.pk or policy_version.status != VersionStatus.PUBLISHED:
        raise ExceptionError("an exception overrides a published version of this tenant")
    requester = person_of(by)
    if requester is None:
        raise PermissionDenied("an exception is requested by a person, not by an API key")
    exc = GovernedException.objects.create(
        tenant=tenant, tool=tool, agent_id=agent_id, action_class=action_class,
        policy_version=policy_version, effect=effect, justification=justification.strip(),
        starts_at=starts_at, ends_at=ends_at, requested_by=requester)
    annotate(tenant, AnnotationKind.OVERRIDE, f"exception {exc.pk} requested: {tool} -> "
             f"{effect}", by=by, data=_summary(exc))
    return exc


@transaction.atomic
def grant_exception(exc: GovernedException, *, by: Actor) -> GovernedException:
    exc = GovernedException.objects.select_for_update().get(pk=exc.pk)
    if not has_role(by, Role.MANAGE_POLICIES, exc.tenant_id):
        raise PermissionDenied("granting an exception needs the manage_policies role")
    grantor = person_of(by)
    if grantor is None:  # a key cannot show it is not whoever asked
        raise PermissionDenied("an exception is granted by a person, not an API key")
    if is_person(by, exc.requested_by_id):
        raise PermissionDenied("the requester of an exception cannot grant it "
                               "(separation of duties)")
    if exc.status == ExceptionStatus.REQUESTED:
        exc.granted_by = grantor
        exc.status = (ExceptionStatus.AWAITING_SECOND if _needs_second_grantor(exc)
                      else ExceptionStatus.ACTIVE)
    elif exc.status == ExceptionStatus.AWAITING_SECOND:
        if is_person(by, exc.granted_by_id):
            raise PermissionDenied("an exception covering exfil needs a second, different "
                                   "grantor")
        exc.second_grantor, exc.status = grantor, ExceptionStatus.ACTIVE
    else:
        raise ExceptionError(f"exception {exc.pk} is {exc.status}")
    exc.save(update_fields=["granted_by", "second_grantor", "status"])
    annotate(exc.tenant, AnnotationKind.OVERRIDE, f"exception {exc.pk} {exc.status}", by=by,
             data=_summary(exc))
    return exc


@transaction.atomic
def revoke_exception(exc: GovernedException, *, by: Actor) -> GovernedException:
    if not has_role(by, Role.MANAGE_POLICIES, exc.tenant_id):
        raise PermissionDenied("revoking an exception needs the manage_policies role")
    GovernedException.objects.filter(pk=exc.pk).update(status=ExceptionStatus.REVOKED)
    exc.refresh_from_db()
    annotate(exc.tenant, AnnotationKind.OVERRIDE, f"exception {exc.pk} revoked", by=by,
             data=_summary(exc))
    return exc


def active_exceptions(tenant: Tenant) -> list[GovernedException]:
    """The tenant's active exceptions not yet ended, newest first: what
    ``applicable_exception`` picks from when given them (loaded once for many decisions)."""
    return list(GovernedException.objects.filter(
        tenant=tenant, status=ExceptionStatus.ACTIVE, ends_at__gt=timezone.now()
    ).order_by("-created_at"))


def applicable_exception(tenant: Tenant, doc: dict[str, Any], version: PolicyVersion | None,
                         loaded: list[GovernedException] | None = None
                         ) -> GovernedException | None:
    """The newest active exception covering this call under ``version``, if any.

    ``loaded``: ``active_exceptions(tenant)`` taken a moment ago, instead of a query; the
    window is checked against the time now either way.
    """
    if version is None:
        return None
    now = timezone.now()
    candidates: Any
    if loaded is None:
        candidates = GovernedException.objects.filter(
            tenant=tenant, status=ExceptionStatus.ACTIVE, policy_version=version,
            starts_at__lte=now, ends_at__gt=now).order_by("-created_at")
    else:
        candidates = [exc for exc in loaded if exc.tenant_id == tenant.pk
                      and exc.policy_version_id == version.pk
                      and exc.starts_at <= now < exc.ends_at]
    for exc in candidates:
        # An agent's exception is for that agent, not for whoever claims its name: it applies
        # only to calls asked through a key bound to the agent.
        if exc.agent_id and (exc.agent_id != doc["agent"]["id"]
                             or not doc["agent"].get("verified")):
            continue
        if exc.action_class and exc.action_class != doc["action_class"]:
            continue
        if fnmatch.fnmatchcase(doc["tool"]["name"], exc.tool):
            found: GovernedException = exc
            return found
    return None


def _summary(exc: GovernedException) -> dict[str, Any]:
    return {"exception": exc.pk, "tool": exc.tool, "agent_id": exc.agent_id,
            "action_class": exc.action_class, "effect": exc.effect,
            "policy_version": exc.policy_version_id, "justification": exc.justification,
            "window": [exc.starts_at.isoformat(), exc.ends_at.isoformat()],
            "status": exc.status}
