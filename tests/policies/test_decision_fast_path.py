"""What the fast decision path keeps: every condition root, regex semantics and their fail-closed
path, a publish or a freeze on the very next decision, and a short SQL path for an agent."""

from __future__ import annotations

from typing import Any

import cel
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from policies.engine import compile_rules, input_document
from policies.models import Decision, Effect
from policies.services import ProposedCall, decide_tool_call, freeze_tool

URL = "/api/v1/decisions/"


def doc(tool: str = "refund_payment", action_class: str = "write", mode: str = "live",
        agent: str = "billing-bot", outage: bool = False, run: str = "r1",
        **args: Any) -> dict[str, Any]:
    return input_document(tenant_slug="acme", outage_mode=outage, agent_id=agent,
                          run_id=run, call_id="c1", tool=tool, action_class=action_class,
                          mode=mode, args=args)


def test_conditions_on_every_root_are_evaluated_per_call():
    policy = compile_rules(Effect.ALLOW, [
        {"name": "live refunds by billing", "effect": Effect.DENY,
         "condition": "tool.name == 'refund_payment' && mode == 'live' && "
                      "agent.id.startsWith('billing')"},
        {"name": "outage writes", "effect": Effect.SANDBOX_ONLY,
         "condition": "tenant.outage_mode && action_class == 'write'"},
        {"name": "tenant and run", "effect": Effect.REQUIRE_APPROVAL,
         "condition": "tenant.slug == 'acme' && run.id == 'r-held' && tool.action_class == "
                      "'write'"},
    ])
    # the same tool, class, agent and mode (one candidate key): only the roots differ
    assert policy.decide(doc()).effect == Effect.DENY
    assert policy.decide(doc(mode="sandbox")).effect == Effect.ALLOW
    assert policy.decide(doc(agent="support-bot")).effect == Effect.ALLOW
    assert policy.decide(doc(agent="support-bot", outage=True)).effect == Effect.SANDBOX_ONLY
    assert policy.decide(doc(agent="support-bot", run="r-held")).effect == (
        Effect.REQUIRE_APPROVAL)
    assert policy.decide(doc(agent="support-bot", action_class="read")).effect == Effect.ALLOW


PATTERNS = ["(?i)(drop|truncate) table", "^SELECT .* FROM [a-z_]+$", "a{2,3}b", "colou?r",
            "[^0-9]x", "\\.", "(?i)straße", "(", "\\d+", "\\bword\\b", "[[:alpha:]]", "\\pL",
            "a$", "(a|b)*c", "[a-c-]", "x+?y", "(?:ab)+"]
SUBJECTS = ["DROP TABLE users", "drop table", "select * from t", "SELECT a FROM users",
            "aab", "aaab", "color", "colour", "1x", "ax", "a.b", "STRASSE", "straße", "Straße",
            "123", "a word here", "äb", "a\n", "abababc", "b-", "xxxy", "", "ab ab"]


def binding_says(condition: str, subject: Any) -> bool | str:
    """What the CEL binding's own ``matches()`` answers, or the error it raises."""
    try:
        return bool(cel.compile(condition).execute({"args": {"q": subject}}) is True)
    except Exception:
        return "error"


@pytest.mark.parametrize("pattern", PATTERNS)
def test_matches_decides_as_the_cel_binding_does_errors_failing_closed(pattern):
    literal = pattern.replace("\\", "\\\\").replace("'", "\\'")
    condition = f"args.q.matches('{literal}')"
    deny = compile_rules(Effect.ALLOW, [{"name": "d", "effect": Effect.DENY,
                                         "condition": condition}])
    allow = compile_rules(Effect.DENY, [{"name": "a", "effect": Effect.ALLOW,
                                         "condition": condition}])
    for subject in [*SUBJECTS, 42, ["DROP TABLE"]]:
        said = binding_says(condition, subject)
        denied = deny.decide(doc(q=subject)).effect == Effect.DENY
        allowed = allow.decide(doc(q=subject)).effect == Effect.ALLOW
        if said == "error":  # fail closed: counts for deny, never for allow
            assert (denied, allowed) == (True, False), (pattern, subject)
        else:
            assert (denied, allowed) == (said, said), (pattern, subject)


@pytest.mark.parametrize("condition", [
    "!args.q.matches('^a')", "args.q.matches('^a') && args.n > 1",
    "has(args.q) && args.q.matches(\"b$\")", "args.q == '.matches(' || args.q.matches('c')",
    "args.list.exists(x, x.matches('^a'))", "matches(args.q, '^a')",
])
def test_matches_anywhere_in_a_condition_decides_as_the_binding(condition):
    policy = compile_rules(Effect.ALLOW, [{"name": "d", "effect": Effect.DENY,
                                           "condition": condition}])
    cases: list[dict[str, Any]] = [
        {"q": "abc", "n": 2, "list": ["ab"]}, {"q": "cab", "n": 0, "list": ["b"]},
        {"q": ".matches(", "n": 5, "list": []}, {"q": 7, "n": 1, "list": [3]}]
    for args in cases:
        try:
            want = cel.compile(condition).execute({"args": args}) is True
        except Exception:
            want = True  # fail closed
        assert (policy.decide(doc(**args)).effect == Effect.DENY) is want, (condition, args)


@pytest.fixture
def agent(acme, key_client, register_tools):
    register_tools(acme, refund_payment="write", get_customer="read")
    return key_client(acme, ["ingest"])


def ask(client: Any, tool: str = "refund_payment", action_class: str = "write",
        **arguments: Any) -> dict[str, Any]:
    body = {"run_id": "run-1", "call_id": "c-1", "agent_id": "billing-bot", "tool": tool,
            "action_class": action_class, "arguments": arguments}
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_a_publish_or_a_freeze_decides_the_very_next_call_in_the_same_process(
        agent, publish, acme, alice):
    publish([{"name": "refunds need a person", "tool": "refund_*",
              "effect": "require_approval"}])
    assert ask(agent)["effect"] == "require_approval"
    publish([{"name": "refunds are fine", "tool": "refund_*", "effect": "allow"}])
    assert ask(agent)["effect"] == "allow"
    freeze_tool(acme, "refund_payment", by=alice)
    assert ask(agent)["effect"] == "deny"
    call = ProposedCall(tool="refund_payment", action_class="write", arguments={})
    assert decide_tool_call(acme, call).effect == "deny"


def test_an_allowed_call_costs_an_agent_three_queries(agent, publish):
    """Key lookup, what is published (with the tool's registered class), the Decision INSERT;
    no transaction around a decision that opens nothing."""
    publish([{"name": "reads", "action_classes": ["read"], "effect": "allow"}])
    ask(agent, "get_customer", "read")  # the key's last-use mark is written once an interval
    with CaptureQueriesContext(connection) as captured:
        answer = ask(agent, "get_customer", "read")
    assert answer["effect"] == "allow"
    assert answer["policy"]["name"] == "tools"
    assert len(captured) <= 3, "\n".join(q["sql"][:120] for q in captured.captured_queries)
    assert Decision.objects.count() == 2


def test_a_held_call_still_opens_its_approval_request_with_its_decision(agent, publish):
    publish([{"name": "refunds need a person", "tool": "refund_*",
              "effect": "require_approval"}])
    held = ask(agent, cents=1)
    assert held["approval"]["status"] == "pending"
    decision = Decision.objects.get(pk=held["id"])
    assert decision.approval_id == held["approval"]["id"]


def test_a_key_revoked_between_two_decisions_is_refused_on_the_second(acme, api_key, publish):
    from rest_framework.test import APIClient

    from core.models import ApiKey
    from core.services import revoke_api_key

    publish([{"name": "reads", "action_classes": ["read"], "effect": "allow"}])
    raw = api_key(acme, ["ingest"])
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert ask(client, "get_customer", "read")["effect"] == "allow"
    revoke_api_key(ApiKey.objects.get(prefix=raw.split("_")[1]))
    refused = client.post(URL, {"tool": "get_customer", "action_class": "read"}, format="json")
    assert refused.status_code == 401
    assert Decision.objects.count() == 1


def test_a_keys_last_use_asks_the_cache_once_an_interval_per_process(agent, publish, settings,
                                                                    monkeypatch):
    from django.core.cache import cache

    settings.LEDGER_API_KEY_TOUCH_INTERVAL = 60
    publish([{"name": "reads", "action_classes": ["read"], "effect": "allow"}])
    asked: list[str] = []
    add = cache.add

    def counted_add(key: str, *args: Any, **kwargs: Any) -> bool:
        asked.append(key)
        return bool(add(key, *args, **kwargs))

    monkeypatch.setattr(cache, "add", counted_add)
    for _ in range(3):
        ask(agent, "get_customer", "read")
    assert len([key for key in asked if key.startswith("apikey-used:")]) == 1


@pytest.mark.parametrize(("pattern", "compiled_once"), [
    ("(?i)(drop|truncate) table", True), ("^refund-[0-9]{2,8}$", True), ("a\\.b|c+?", True),
    ("\\d+", False), ("\\w", False), ("\\bx", False), ("(?m)^a", False), ("(?=a)", False),
    ("[[:alpha:]]", False), ("[a-z&&[^aeiou]]", False), ("a{1,1000}", False), ("(", False),
])
def test_only_patterns_both_engines_read_alike_are_compiled_once(pattern, compiled_once):
    literal = pattern.replace("\\", "\\\\")
    policy = compile_rules(Effect.ALLOW, [{"name": "d", "effect": Effect.DENY,
                                           "condition": f"args.q.matches('{literal}')"}])
    assert bool(policy.rules[0].functions) is compiled_once


def test_the_decision_answer_is_what_the_decision_serializer_says(agent, publish, acme, alice,
                                                                  dave):
    from approvals.models import ApprovalRequest
    from approvals.services import decide_approval
    from core.services import grant_role
    from policies.api.views import DecisionSerializer

    def checked(answer: dict[str, Any]) -> dict[str, Any]:
        stored = Decision.objects.select_related("policy_version__policy", "approval").get(
            pk=answer["id"])
        assert answer == DecisionSerializer(stored).data
        return answer

    publish([{"name": "reads", "action_classes": ["read"], "effect": "allow"},
             {"name": "refunds need a person", "tool": "refund_*", "effect": "require_approval"}])
    checked(ask(agent, "get_customer", "read"))
    checked(ask(agent, "get_customer", "write"))  # registered as read, declared write
    checked(ask(agent, "unknown_tool", "write", cents=5))
    held = checked(ask(agent, cents=1))
    grant_role(alice, "approve", acme)
    decide_approval(ApprovalRequest.objects.get(pk=held["approval"]["id"]), by=alice,
                    approve=True, justification="fine")
    body = {"run_id": "run-1", "call_id": "c-1", "agent_id": "billing-bot",
            "tool": "refund_payment", "action_class": "write", "arguments": {"cents": 1},
            "approval_id": held["approval"]["id"]}
    assert checked(agent.post(URL, body, format="json").json())["approval"]["consumed"] is True
