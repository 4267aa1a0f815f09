"""The embedded engine: what matches, what wins, and how errors fail closed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.engine import compile_rules, condition_problems, input_document
from policies.models import STRICTNESS, Effect


def doc(tool: str = "refund_payment", action_class: str = "write", mode: str = "live",
        agent: str = "billing-bot", outage: bool = False, **args: Any) -> dict[str, Any]:
    return input_document(tenant_slug="acme", outage_mode=outage, agent_id=agent,
                          run_id="r1", call_id="c1", tool=tool, action_class=action_class,
                          mode=mode, args=args)


def rule(name: str, effect: str, **match: Any) -> dict[str, Any]:
    return {"name": name, "effect": effect, **match}


def decide(rules: list[dict[str, Any]], default: str = Effect.ALLOW, **call: Any) -> str:
    return compile_rules(default, rules).decide(doc(**call)).effect


def test_no_match_gives_the_policys_default():
    assert decide([], Effect.DENY) == Effect.DENY
    assert decide([rule("reads", Effect.DENY, action_classes=["read"])], Effect.ALLOW) == (
        Effect.ALLOW)


def test_the_strictest_matching_effect_wins_whatever_the_order():
    rules = [rule("allow all", Effect.ALLOW), rule("approve writes", Effect.REQUIRE_APPROVAL,
                                                    action_classes=["write"]),
             rule("sandbox refunds", Effect.SANDBOX_ONLY, tool="refund_*")]
    assert decide(rules) == Effect.REQUIRE_APPROVAL
    assert decide(list(reversed(rules))) == Effect.REQUIRE_APPROVAL
    verdict = compile_rules(Effect.ALLOW, rules).decide(doc())
    assert [m["name"] for m in verdict.matched] == ["allow all", "approve writes",
                                                   "sandbox refunds"]


@pytest.mark.parametrize(("glob", "tool", "matches"), [
    ("refund_*", "refund_payment", True), ("refund_*", "get_refund", False),
    ("*", "anything", True), ("send_?mail", "send_email", True), ("Send_*", "send_email", False),
])
def test_tool_globs(glob, tool, matches):
    got = decide([rule("g", Effect.DENY, tool=glob)], tool=tool)
    assert (got == Effect.DENY) is matches


def test_agent_mode_and_class_filters():
    rules = [rule("live exfil by the exporter", Effect.DENY, agents=["data-exporter"],
                  modes=["live"], action_classes=["exfil"])]
    assert decide(rules, tool="upload", action_class="exfil", agent="data-exporter") == (
        Effect.DENY)
    assert decide(rules, tool="upload", action_class="exfil", agent="data-exporter",
                  mode="sandbox") == Effect.ALLOW
    assert decide(rules, tool="upload", action_class="exfil", agent="other") == Effect.ALLOW


def test_outage_mode_rules():
    rules = [rule("outage: sandbox everything", Effect.SANDBOX_ONLY, outage="only")]
    assert decide(rules, outage=True) == Effect.SANDBOX_ONLY
    assert decide(rules, outage=False) == Effect.ALLOW
    never = [rule("normal days", Effect.DENY, outage="never")]
    assert decide(never, outage=True) == Effect.ALLOW


def test_conditions_over_arguments():
    rules = [rule("big refunds", Effect.REQUIRE_APPROVAL,
                  condition="has(args.amount_cents) && args.amount_cents > 10000")]
    assert decide(rules, amount_cents=50000) == Effect.REQUIRE_APPROVAL
    assert decide(rules, amount_cents=500) == Effect.ALLOW
    assert decide(rules) == Effect.ALLOW


def test_an_evaluation_error_fails_closed():
    # args.amount_cents is missing: the restrictive rule matches, the permissive one does not
    restrictive = [rule("deny big", Effect.DENY, condition="args.amount_cents > 10")]
    assert decide(restrictive) == Effect.DENY
    permissive = [rule("allow small", Effect.ALLOW, condition="args.amount_cents < 10")]
    assert decide(permissive, Effect.REQUIRE_APPROVAL) == Effect.REQUIRE_APPROVAL


@pytest.mark.parametrize(("condition", "problem"), [
    ("args.amount >", "syntax error"),
    ("tool.nme == 'x'", "tool has no field 'nme'"),
    ("user.admin", "unknown variable"),
    ("1 + 2", "must be true or false"),
    ("x" * 501, "at most 500 characters"),
    ("((((((((((true))))))))))", "nests at most"),
])
def test_bad_conditions_are_refused_when_saved(condition, problem):
    problems = condition_problems(condition)
    assert problems
    assert problem in problems[0]


@pytest.mark.parametrize("condition", [
    "args.amount_cents > 10000", "tool.name.startsWith('refund')",
    "args.items.exists(i, i.price > 100)", "mode == 'live' && tenant.outage_mode == false", ""])
def test_good_conditions_pass(condition):
    assert condition_problems(condition) == []


EFFECTS = st.sampled_from(list(Effect))
RULES = st.lists(st.builds(
    lambda effect, tool, classes, modes: rule("r", effect, tool=tool, action_classes=classes,
                                              modes=modes),
    EFFECTS, st.sampled_from(["*", "refund_*", "send_*", "get_customer"]),
    st.lists(st.sampled_from(["read", "write", "delete", "exfil"]), max_size=2, unique=True),
    st.lists(st.sampled_from(["live", "sandbox", "replay"]), max_size=2, unique=True)),
    max_size=6)
CALLS = st.fixed_dictionaries({
    "tool": st.sampled_from(["refund_payment", "send_email", "get_customer", "other"]),
    "action_class": st.sampled_from(["read", "write", "delete", "exfil"]),
    "mode": st.sampled_from(["live", "sandbox", "replay"])})


@settings(max_examples=300, deadline=None)
@given(rules=RULES, default=EFFECTS, call=CALLS,
       deny_tool=st.sampled_from(["*", "refund_*", "send_*", "other"]))
def test_adding_a_deny_rule_never_loosens_a_decision(rules, default, call, deny_tool):
    before = decide(rules, default, **call)
    after = decide([*rules, rule("deny", Effect.DENY, tool=deny_tool)], default, **call)
    assert STRICTNESS[Effect(after)] >= STRICTNESS[Effect(before)]
    if before == Effect.DENY:
        assert after == Effect.DENY


@settings(max_examples=300, deadline=None)
@given(rules=RULES, extra=RULES, default=EFFECTS, call=CALLS)
def test_a_matching_deny_rule_is_never_outvoted(rules, extra, default, call):
    denied = [*rules, rule("deny all", Effect.DENY)]
    assert decide([*denied, *extra], default, **call) == Effect.DENY
