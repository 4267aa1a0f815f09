"""Core services record what they change (API keys, personal tokens, outage mode) on the
tenant's governance log. The log is the ledger's (``runs.annotations``), a layer above the
core, so the ledger registers how it is written (``RunsConfig.ready``) and the core never
imports it. The record is written in the change's own transaction; with no recorder registered
the change is refused, never left unrecorded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured

from .actors import Actor

#: The agent id the portal's own records are filed under; no API key may act for it.
PORTAL_AGENT_ID = "ledger-portal"


class Recorder(Protocol):
    def __call__(self, tenant: Any, kind: str, body: str, *, by: Actor, data: Any) -> Any: ...


_recorders: list[Recorder] = []


def register_recorder(recorder: Recorder) -> None:
    _recorders[:] = [recorder]


def record_on_governance_log(tenant: Any, kind: str, body: str, *, by: Actor,
                             data: Any = None) -> Any:
    """Append an annotation of ``kind`` (an annotation kind's value) to ``tenant``'s governance
    log; returns it."""
    if not _recorders:
        raise ImproperlyConfigured("no governance log is installed (the runs app records it)")
    return _recorders[0](tenant, kind, body, by=by, data=data)


#: Why the role grants and removals being made now happen (e.g. single sign-on applying the
#: IdP's groups), for the governance log's role-change entries (``runs.governance_log``).
role_change_source: ContextVar[str] = ContextVar("role_change_source", default="")


@contextmanager
def role_changes_from(source: str) -> Iterator[None]:
    token = role_change_source.set(source)
    try:
        yield
    finally:
        role_change_source.reset(token)
