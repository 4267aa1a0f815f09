"""Every change to a governance object is a ledger annotation in the tenant's governance log.

Services annotate the interventions they perform (publishing, freezing, approving, ...); this
module covers what no service sees: an edit in the admin, an API write, a shell session. It
listens to django-simple-history, which records every save of a governance object whatever the
entry point, and to the role rows django-guardian writes, and appends who, when and the
before/after diff to the governance log in the same transaction as the change.

The ledger does not import the apps above it: objects are recognised by their model label.
"""

from __future__ import annotations

import datetime
import decimal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.contrib.auth import get_user_model
from django.db import models
from django.db.models.signals import post_delete, post_save
from simple_history.signals import post_create_historical_record

from core.governance_record import role_change_source

from .models import AnnotationKind

#: model label -> what the annotation calls it, for every governance object with history
GOVERNED_MODELS = {
    "ledger_portal.Tenant": "tenant settings",
    "ledger_portal.ApiKey": "API key",
    "policies.Policy": "policy",
    "policies.PolicyVersion": "policy version",
    "policies.Rule": "policy rule",
    "policies.GovernedException": "governed exception",
    "runs.Agent": "agent",
    "runs.Tool": "tool registry entry",
    "runs.RedactionRule": "redaction rule",
    "runs.LegalHold": "legal hold",
    "incidents.Incident": "incident",
    "approvals.ApprovalRoute": "approval notification route",
}
# Never copied into the log: credentials' hashes, and bookkeeping that is not a decision.
HIDDEN_FIELDS = frozenset({"key_hash", "id", "history_id", "updated_at", "last_used_at",
                           "last_used_ip"})
# Rows the portal creates on its own while recording what agents send.
AUTOMATIC_REASONS = frozenset({"first seen in a batch"})
ACTIONS = {"+": "created", "~": "changed", "-": "deleted"}
_suspended: ContextVar[bool] = ContextVar("governance_log_suspended", default=False)


@contextmanager
def setting_up() -> Iterator[None]:
    """Set up a fresh installation (fixtures, a demo) without logging each step of it: what
    happens inside is the platform's own preparation, not an intervention on a live tenant."""
    token = _suspended.set(True)
    try:
        yield
    finally:
        _suspended.reset(token)


def _plain(value: Any) -> Any:
    """A value as JSON: what the canonical form of an annotation can carry."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, models.Model):
        return value.pk
    return str(value)


def _fields(record: Any) -> dict[str, Any]:
    names = [f.attname for f in record.instance_type._meta.concrete_fields
             if f.attname not in HIDDEN_FIELDS]
    return {name: _plain(getattr(record, name, None)) for name in names}


def change_of(record: Any) -> dict[str, list[Any]]:
    """field -> [before, after] for one historical record (before is None on creation, after
    is None on deletion)."""
    after = _fields(record)
    previous = record.prev_record if record.history_type != "+" else None
    before = _fields(previous) if previous is not None else {}
    if record.history_type == "-":
        return {name: [value, None] for name, value in after.items()}
    return {name: [before.get(name), value] for name, value in after.items()
            if before.get(name) != value}


def _tenant_of(instance: Any) -> Any:
    from core.models import Tenant

    return instance if isinstance(instance, Tenant) else getattr(instance, "tenant", None)


def record_governance_change(sender: Any, instance: Any, history_instance: Any,
                             **kwargs: Any) -> None:
    """simple-history receiver: annotate a governance object's change in its tenant's log."""
    what = GOVERNED_MODELS.get(instance._meta.label)
    if (what is None or _suspended.get()
            or history_instance.history_change_reason in AUTOMATIC_REASONS):
        return
    if what == "tenant settings" and history_instance.history_type == "+":
        return  # a new tenant has no log yet; its creation is the platform's, not its own
    tenant = _tenant_of(instance)
    if tenant is None or tenant.pk is None:
        return
    diff = change_of(history_instance)
    if not diff:
        return
    from .annotations import annotate

    action = ACTIONS[history_instance.history_type]
    user = history_instance.history_user
    annotate(tenant, AnnotationKind.CONFIGURATION, f"{action} {what} {instance}",
             by=user, data={"object": instance._meta.label, "pk": _plain(instance.pk),
                            "action": action, "changes": diff,
                            "reason": history_instance.history_change_reason or ""})


def record_role_change(sender: Any, instance: Any, created: bool = True, **kwargs: Any) -> None:
    """guardian receiver: a role granted to (or removed from) a user or group on a tenant."""
    if kwargs.get("raw") or _suspended.get() or (kwargs.get("signal") is post_save
                                                  and not created):
        return
    from .annotations import annotate

    holder = getattr(instance, "user", None) or getattr(instance, "group", None)
    kind = "user" if isinstance(holder, get_user_model()) else "group"
    action = "granted" if kwargs.get("signal") is post_save else "removed"
    role = instance.permission.codename
    source = role_change_source.get()
    annotate(instance.content_object, AnnotationKind.CONFIGURATION,
             f"{action} role {role} {'to' if action == 'granted' else 'from'} {kind} {holder}"
             + (f" ({source})" if source else ""),
             data={"object": "role", "action": action, "role": role, "holder_kind": kind,
                   "holder": str(holder), "changes": {role: [action == "removed",
                                                             action == "granted"]},
                   **({"source": source} if source else {})},
             by=_request_user())


def _request_user() -> Any:
    """The signed-in person of the request being served, if any (simple-history's middleware
    keeps the request where its own receivers find it)."""
    from simple_history.models import HistoricalRecords

    request = getattr(HistoricalRecords.context, "request", None)
    user = getattr(request, "user", None)
    return user if isinstance(user, get_user_model()) else None


def connect() -> None:
    from core.models import TenantGroupObjectPermission, TenantUserObjectPermission

    post_create_historical_record.connect(record_governance_change,
                                          dispatch_uid="ledger-governance-log")
    for model in (TenantUserObjectPermission, TenantGroupObjectPermission):
        post_save.connect(record_role_change, sender=model,
                          dispatch_uid=f"ledger-role-grant-{model.__name__}")
        post_delete.connect(record_role_change, sender=model,
                            dispatch_uid=f"ledger-role-removal-{model.__name__}")
