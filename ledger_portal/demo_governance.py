"""The demo's governance, each piece made once through the services a governor would use:
a published policy and a draft waiting for the other governor, a governed exception, and every
tool's HTTP connector at the demo's tool server (a governed change: one governor proposes it,
the other confirms it)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.utils import timezone

from core.models import Tenant
from ledger_portal import demo_tools
from operations.tool_changes import confirm_tool_change, propose_tool_change
from policies.exceptions import grant_exception, request_exception
from policies.models import (
    Effect,
    GovernedException,
    Policy,
    PolicyVersion,
    Rule,
    VersionStatus,
)
from policies.services import create_draft, publish_policy_version
from runs.models import GOVERNED_TOOL_FIELDS, Tool
from runs.sample_runs import TOOLS

BASELINE = "acme-baseline"
# (name, rule fields): what the published version decides besides its default (allow)
BASELINE_RULES: list[tuple[str, Mapping[str, Any]]] = [
    ("exfil needs a person", {"action_classes": ["exfil"], "effect": Effect.REQUIRE_APPROVAL}),
    ("deletes need a person", {"action_classes": ["delete"], "effect": Effect.REQUIRE_APPROVAL}),
]
LARGE_REFUNDS: tuple[str, Mapping[str, Any]] = ("large refunds need a person",
                 {"tool": "refund_payment", "condition": "args.amount_cents > 50000",
                  "effect": Effect.REQUIRE_APPROVAL})


def _add_rules(version: PolicyVersion, rules: list[tuple[str, Mapping[str, Any]]]) -> None:
    start = version.rules.count()
    for position, (name, fields) in enumerate(rules, start=start):
        Rule.objects.create(tenant=version.tenant, version=version, position=position, name=name,
                            **fields)


def seed_policies(tenant: Tenant, *, author: User, publisher: User) -> PolicyVersion:
    """``acme-baseline`` v1 published (``author`` wrote it, ``publisher`` published it: two
    people), and v2 drafted by ``author`` for ``publisher`` to review and publish."""
    policy, _ = Policy.objects.get_or_create(
        tenant=tenant, name=BASELINE,
        defaults={"description": "What the acme agents may do without asking a person."})
    published = policy.versions.filter(status=VersionStatus.PUBLISHED).first()
    if published is None and not policy.versions.exists():
        first = create_draft(policy, by=author, change_note="Baseline: reads and writes go "
                             "ahead; exfil and deletes wait for a person.")
        _add_rules(first, BASELINE_RULES)
        published = publish_policy_version(first, by=publisher)
        draft = create_draft(policy, by=author, change_note="Refunds over 500 EUR wait for a "
                             "person too (after the double refund).")
        _add_rules(draft, [LARGE_REFUNDS])
    assert published is not None, f"{BASELINE} has versions but none published"
    return published


def seed_exception(tenant: Tenant, version: PolicyVersion, *, requester: User,
                   grantor: User) -> GovernedException:
    """A granted, time-bound exception: the data exporter deletes without waiting, for a week."""
    existing = GovernedException.objects.filter(tenant=tenant).first()
    if existing is not None:
        return existing
    now = timezone.now()
    exception = request_exception(
        tenant, by=requester, tool="delete_record", agent_id="data-exporter",
        action_class="delete", policy_version=version, starts_at=now,
        ends_at=now + timedelta(days=7),
        justification="LEGAL-77: the erasure-request backlog must be cleared this week; the "
        "data exporter deletes without waiting for a person until then.")
    return grant_exception(exception, by=grantor)


def connect_tools(tenant: Tenant, url: str, *, proposer: User, confirmer: User) -> int:
    """Point every demo tool of ``tenant`` at the demo's server ``url``; how many changed."""
    changed = 0
    for tool in Tool.objects.filter(tenant=tenant, name__in=list(TOOLS)):
        wanted = demo_tools.connector_settings(tool.name, url)
        governed = {f: v for f, v in wanted.items() if f in GOVERNED_TOOL_FIELDS}
        plain = {f: v for f, v in wanted.items() if f not in GOVERNED_TOOL_FIELDS}
        if all(getattr(tool, f) == v for f, v in wanted.items()):
            continue
        for field, value in plain.items():  # what the admin saves at once
            setattr(tool, field, value)
        tool._history_user = proposer  # type: ignore[attr-defined]
        tool.save()
        change = propose_tool_change(tool, governed, by=proposer)
        if change is not None:
            confirm_tool_change(change, by=confirmer)
        changed += 1
    return changed
