"""The policy trail of recorded tool calls, for the ledger's run views: governance registers
it with ``runs.api.presenters`` (``PoliciesConfig.ready``), so the ledger shows what was decided
about each call without importing governance."""

from __future__ import annotations

from typing import Any

from django.db.models import F, Q

from .models import STRICTNESS, Decision, Effect, Mode


def deciding_rule(matched: list[dict[str, Any]], policy: str | None, version: int | None
                  ) -> str:
    """The name of the rule that decided: the strictest match of the deciding policy version
    ("" when none matched and the policy's default, or the baseline, decided)."""
    own = [rule for rule in matched or [] if isinstance(rule, dict)
           and rule.get("policy", policy) == policy and rule.get("version", version) == version
           and rule.get("effect") in Effect.values]
    if not own or policy is None:
        return ""
    return str(max(own, key=lambda rule: STRICTNESS[Effect(rule["effect"])]).get("name", ""))


def decisions_by_call(tenant_id: int, call_ids: list[str], run_id: str = ""
                      ) -> dict[str, list[dict[str, Any]]]:
    """call_id -> its decisions, oldest first (taken before the call was recorded, linked to it
    by call_id; a replay's own decisions are the replay's trail, not the run's). With
    ``run_id``, also the decisions about that run's calls that were never recorded (refused
    before they ran); a rollback's decision belongs to the rollback. One query."""
    about = Q(call_id__in=call_ids)
    if run_id:
        about |= Q(run_id=run_id) & ~Q(mode=Mode.ROLLBACK)
    found: dict[str, list[dict[str, Any]]] = {}
    rows = (Decision.objects.filter(about, tenant_id=tenant_id, replay__isnull=True)
            .order_by("id").values("id", "call_id", "effect", "reason", "mode", "created_at",
                                   "approval_id", "exception_id", "tool", "matched_rules",
                                   policy=F("policy_version__policy__name"),
                                   version=F("policy_version__number")))
    for row in rows:
        row["rule"] = deciding_rule(row.pop("matched_rules"), row["policy"], row["version"])
        found.setdefault(row.pop("call_id"), []).append(row)
    return found
