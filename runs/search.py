"""Finding runs by their run_id, agent_id or trigger reference: exact, then prefix, then
contains.

Prefix and contains ignore case (people do not remember an id's case); exact does not, since
ids are case-sensitive. On PostgreSQL each ``UPPER(column) LIKE`` is served by a trigram index
(migration 0024), on SQLite by a scan of the (small, embedded) tables.

A trigger reference is content a reader sees through redaction (``REDACTED_FIELDS``): a run
matches by it only when the query matches the reference as this reader sees it as well as
the stored one. Matching the stored value alone would be an oracle: a prefix search reads a
hidden key out a character at a time, and an exact search confirms a guess (an e-mail
address, a short password) that the reader only ever sees as a marker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from django.db.models import QuerySet

from core.actors import Viewer
from core.roles import Role

from .models import Agent, Run

__all__ = ["CONTAINS_MIN_LENGTH", "RunMatch", "RunSearch", "candidates", "matching_agents",
           "search_runs"]

How = Literal["exact", "prefix", "contains"]
WAYS: tuple[How, ...] = ("exact", "prefix", "contains")
FIELDS = ("run_id", "agent_id", "trigger_ref")  # a run matching twice is listed by the first
# A trigram index finds nothing shorter than a trigram: a shorter part is looked for at the
# start of an id only.
CONTAINS_MIN_LENGTH = 3
# Stored trigger references read per way to find those the reader sees match. Runs hidden
# matches push out are the oldest; the scan stops quietly (saying so would tell the reader
# that many references hide what they typed).
TRIGGER_SCAN_LIMIT = 1000
# Agents whose runs a part of an agent_id lists (the newest): a tenant has tens of agents, and
# a part that many match is no way to find a run.
AGENT_MATCH_LIMIT = 5000
_LOOKUPS = {"exact": "exact", "prefix": "istartswith", "contains": "icontains"}


@dataclass(frozen=True)
class RunMatch:
    run: Run
    field: str  # run_id, agent_id or trigger_ref
    how: How


@dataclass
class RunSearch:
    """The runs matching a query, best matches first, then newest first."""

    query: str
    matches: list[RunMatch] = field(default_factory=list)
    more: bool = False  # more runs match than are listed
    contains_skipped: bool = False  # the query is too short to look inside ids

    @property
    def runs(self) -> list[Run]:
        return [match.run for match in self.matches]

    @property
    def exact(self) -> list[RunMatch]:
        return [match for match in self.matches if match.how == "exact"]


def candidates(runs: QuerySet[Run], column: str, how: How, query: str, limit: int,
               agents: QuerySet[Agent] | None = None) -> QuerySet[Any]:
    """The newest ``limit`` of ``runs`` whose stored ``column`` matches ``query`` in that way:
    ``(pk, tenant_id, column)`` rows. ``agent_id`` is matched on ``agents`` (the same tenants'
    as ``runs``) first: see ``matching_agents``."""
    if column != "agent_id":
        return runs.filter(**{f"{column}__{_LOOKUPS[how]}": query}).order_by(
            "-id").values_list("pk", "tenant_id", column)[:limit]
    if agents is None:
        raise TypeError("matching runs by agent_id needs the agents of the same tenants")
    agent_pks = list(matching_agents(agents, how, query))
    if not agent_pks:
        return runs.none().values_list("pk", "tenant_id", "agent__agent_id")
    return runs.filter(agent_id__in=agent_pks).order_by("-id").values_list(
        "pk", "tenant_id", "agent__agent_id")[:limit]


def matching_agents(agents: QuerySet[Agent], how: How, query: str) -> QuerySet[Any]:
    """The pks of ``agents`` whose agent_id matches ``query`` in that way (the newest
    ``AGENT_MATCH_LIMIT``). Asked on its own, before the runs: joined to the runs, a part no
    agent has made PostgreSQL walk every run of the tenant newest first looking for one (240 ms
    a way at 10,000,000 tool calls); the agents table is small and has its own indexes."""
    return agents.filter(**{f"agent_id__{_LOOKUPS[how]}": query}).order_by(
        "-pk").values_list("pk", flat=True)[:AGENT_MATCH_LIMIT]


def shows(text: str, how: How, query: str) -> bool:
    """Whether ``text`` matches ``query`` in that way, as ``candidates`` matches in SQL."""
    if how == "exact":
        return text == query
    if how == "prefix":
        return text.upper().startswith(query.upper())
    return query.upper() in text.upper()


ShownTrigger = Callable[[int, str], str]  # (tenant_id, stored) -> as this reader sees it


def search_runs(user: Viewer, query: str, shown_trigger: ShownTrigger,
                tenant_slug: str | None = None, limit: int = 50) -> RunSearch:
    """Runs of ``user``'s tenants matching ``query`` (at most ``limit``), each with the field
    and the way it matched: every exact match, then prefix, then contains, newest first."""
    query = query.strip()
    search = RunSearch(query, contains_skipped=0 < len(query) < CONTAINS_MIN_LENGTH)
    if not query:
        return search
    runs = Run.objects.for_user(user, Role.VIEW_LEDGER)
    agents = Agent.objects.for_user(user, Role.VIEW_LEDGER)
    if tenant_slug:
        runs = runs.filter(tenant__slug=tenant_slug)
        agents = agents.filter(tenant__slug=tenant_slug)
    ways = WAYS[:2] if search.contains_skipped else WAYS
    found: dict[int, tuple[str, How]] = {}
    for how in ways:
        tier: dict[int, str] = {}
        for column in FIELDS:
            if column == "trigger_ref":
                pks = _shown_trigger_matches(runs, how, query, shown_trigger, limit + 1)
            else:
                pks = [pk for pk, _, _ in candidates(runs, column, how, query, limit + 1,
                                                     agents)]
            for pk in pks:
                if pk not in found:
                    tier.setdefault(pk, column)
        found.update((pk, (tier[pk], how)) for pk in sorted(tier, reverse=True))
        if len(found) > limit:
            break
    listed = list(found.items())[:limit]
    rows = runs.filter(pk__in=[pk for pk, _ in listed]).select_related("tenant", "agent")
    by_pk = {run.pk: run for run in rows}
    search.matches = [RunMatch(by_pk[pk], column, how) for pk, (column, how) in listed
                      if pk in by_pk]  # a run removed by retention meanwhile is skipped
    search.more = len(found) > limit
    return search


def _shown_trigger_matches(runs: QuerySet[Run], how: How, query: str,
                           shown_trigger: ShownTrigger, limit: int) -> list[int]:
    stored = candidates(runs, "trigger_ref", how, query, TRIGGER_SCAN_LIMIT)
    matching = []
    for pk, tenant_id, trigger_ref in stored:
        if shows(shown_trigger(tenant_id, trigger_ref), how, query):
            matching.append(pk)
            if len(matching) == limit:
                break
    return matching
