"""Writing rules: a condition checked as it is typed, tried on a recorded call, and two
versions compared rule by rule.

A condition is tried on the call's input document *as the author may see it* (strict
redaction): evaluating it on the stored arguments would let someone who governs but may not
see a secret test guesses of it ("does args.token start with sk_live_A?"). A condition over a
redacted value reads the marker text, and the answer says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cel
from django.core.exceptions import PermissionDenied

from core.actors import Actor
from core.roles import Role
from core.tenancy import has_role
from runs.models import ToolCall
from runs.redaction import marker_texts

from .engine import ROOTS, condition_problems, input_document
from .models import PolicyVersion, Rule


@dataclass
class ConditionTrial:
    problems: list[str] = field(default_factory=list)
    call: dict[str, Any] | None = None
    outcome: str = ""  # "matches", "does not match", or why it could not be evaluated
    redacted: bool = False  # the call's arguments held values the author sees redacted


def try_condition(version: PolicyVersion, condition: str, call_id: str = "", *,
                  by: Actor) -> ConditionTrial:
    """Check ``condition`` as a rule of ``version`` would, and, given a ``call_id`` of the
    version's tenant, say whether it matches that recorded call."""
    if not has_role(by, Role.MANAGE_POLICIES, version.tenant_id):
        raise PermissionDenied("trying a condition needs the manage_policies role")
    trial = ConditionTrial(problems=condition_problems(condition))
    call_id = call_id.strip()
    if trial.problems or not call_id:
        return trial
    row = (ToolCall.objects.filter(tenant_id=version.tenant_id, call_id=call_id)
           .values("call_id", "run__run_id", "run__agent__agent_id", "tool__name",
                   "action_class", "input", "classifications", "started_at").first())
    if row is None:
        trial.outcome = f"no recorded call {call_id!r} in this tenant"
        return trial
    from runs.services import redactor_for

    redactor = redactor_for(None, version.tenant_id).redactor
    shown_args = marker_texts(redactor.redact(row["input"], "input", row["classifications"]))
    trial.redacted = shown_args != row["input"]
    trial.call = {"call_id": row["call_id"], "run_id": row["run__run_id"],
                  "agent_id": row["run__agent__agent_id"], "tool": row["tool__name"],
                  "action_class": row["action_class"], "started_at": row["started_at"]}
    doc = input_document(tenant_slug=version.tenant.slug, outage_mode=version.tenant.outage_mode,
                         agent_id=row["run__agent__agent_id"], run_id=row["run__run_id"],
                         call_id=row["call_id"], tool=row["tool__name"],
                         action_class=row["action_class"], mode="live",
                         args=shown_args if isinstance(shown_args, dict) else {})
    if not condition.strip():
        trial.outcome = "matches (no condition)"
        return trial
    program = cel.compile(condition)
    try:
        result = program.execute({root: doc[root] for root in set(program.variables()) & ROOTS})
    except KeyError as missing:
        trial.outcome = f"does not match: the call has no {missing}"
    except Exception as exc:  # what the engine does at decision time: fail closed
        trial.outcome = f"cannot be evaluated on this call ({exc}): a deny, approval or " \
                        "sandbox rule counts it as a match, an allow rule as no match"
    else:
        trial.outcome = "matches" if result is True else "does not match"
    return trial


@dataclass
class RuleChange:
    name: str
    change: str  # "added", "removed", "changed", "unchanged"
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    fields: list[str]  # the settings that differ (changed rules)


def rule_by_rule(old: PolicyVersion, new: PolicyVersion) -> tuple[list[tuple[str, Any, Any]],
                                                                   list[RuleChange]]:
    """What differs between two versions: their deciding settings (name, old, new) and each
    rule, paired by name (a renamed rule reads as one removed and one added)."""
    settings = [(name, getattr(old, name), getattr(new, name))
                for name in PolicyVersion.DECIDING_FIELDS if getattr(old, name) != getattr(
                    new, name)]
    before = {r.name: _shown(r) for r in Rule.objects.filter(
        tenant_id=old.tenant_id, version=old).order_by("position", "id")}
    after = {r.name: _shown(r) for r in Rule.objects.filter(
        tenant_id=new.tenant_id, version=new).order_by("position", "id")}
    changes = []
    for name in [*after, *(n for n in before if n not in after)]:
        was, now = before.get(name), after.get(name)
        if was is None:
            changes.append(RuleChange(name, "added", None, now, []))
        elif now is None:
            changes.append(RuleChange(name, "removed", was, None, []))
        else:
            differ = [key for key in now if now[key] != was[key]]
            changes.append(RuleChange(name, "changed" if differ else "unchanged", was, now,
                                      differ))
    return settings, changes


def _shown(rule: Rule) -> dict[str, Any]:
    return {"position": rule.position, "tool": rule.tool,
            "action_classes": ", ".join(rule.action_classes) or "any",
            "agents": ", ".join(rule.agents) or "any", "modes": ", ".join(rule.modes) or "any",
            "outage": rule.outage, "condition": rule.condition or "—", "effect": rule.effect}
