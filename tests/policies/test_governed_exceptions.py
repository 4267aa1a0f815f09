"""Governed exceptions: justified, granted by someone else (two people when exfil is
covered), scoped to a tool, agent, class, window and policy version, recorded on the decisions
they override, and gone when they expire."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from core.models import ApiKey
from core.services import issue_api_key
from policies.exceptions import (
    ExceptionError,
    grant_exception,
    request_exception,
    revoke_exception,
)
from policies.models import ExceptionStatus
from policies.services import ProposedCall, decide_tool_call
from runs.governance_log import setting_up
from runs.models import Annotation

RULES = [{"name": "no deletes", "action_classes": ["delete"], "effect": "deny"},
         {"name": "exfil needs a person", "action_classes": ["exfil"],
          "effect": "require_approval"}]


def decide(tenant, tool="delete_record", action_class="delete", agent="cleaner"):
    """Asked through a key bound to ``agent``: an agent's exception applies to it alone."""
    return decide_tool_call(tenant, ProposedCall(tool=tool, action_class=action_class,
                                                 arguments={}, agent_id=agent),
                            requester_key=key_bound_to(tenant, agent))


def key_bound_to(tenant, agent: str) -> ApiKey:
    key = ApiKey.objects.filter(tenant=tenant, name=f"agent {agent}").first()
    if key is None:
        with setting_up():
            key, _ = issue_api_key(tenant, f"agent {agent}", ["ingest"], agent_ids=[agent])
    return key


@pytest.fixture
def bob(acme):
    """An operator of acme: asks for exceptions, may not grant them."""
    from django.contrib.auth.models import User

    from core.services import grant_role

    with setting_up():
        user = User.objects.create_user("bob", password="pw-for-tests-only", is_staff=True)
        grant_role(user, "operate", acme)
    return user


def test_someone_who_neither_operates_nor_governs_cannot_ask(acme, globex, version, charlie):
    from django.contrib.auth.models import User

    from core.services import grant_role

    with setting_up():
        viewer = User.objects.create_user("viewer")
        grant_role(viewer, "view_ledger", acme)
    for outsider in (viewer, charlie):  # charlie holds every role, on globex
        with pytest.raises(PermissionDenied, match="operate or the manage_policies"):
            ask(acme, outsider, version)


@pytest.fixture
def version(publish):
    return publish(RULES)


def ask(acme, requester, version, **scope):
    now = timezone.now()
    values = {"tool": "delete_record", "action_class": "delete", "agent_id": "cleaner",
              "justification": "GDPR erasure backlog, ticket PRIV-9", "starts_at": now,
              "ends_at": now + timedelta(hours=2), **scope}
    return request_exception(acme, by=requester, policy_version=version, **values)


def test_an_active_exception_overrides_and_is_recorded(acme, version, bob, alice):
    exc = ask(acme, bob, version)
    assert decide(acme).effect == "deny"  # requested, not granted yet
    grant_exception(exc, by=alice)
    decision = decide(acme)
    assert decision.effect == "allow"
    assert decision.exception == exc
    assert "governed exception" in decision.reason
    assert decide(acme, agent="someone-else").effect == "deny"
    assert decide(acme, tool="drop_table").effect == "deny"
    notes = Annotation.objects.filter(tenant=acme, annotation_kind="override")
    assert [n.data["status"] for n in notes.order_by("seq")] == ["requested", "active"]


def test_a_justification_is_required(acme, version, bob):
    with pytest.raises(ExceptionError, match="justification"):
        ask(acme, bob, version, justification="   ")


def test_the_requester_cannot_grant_it(acme, version, alice):
    exc = ask(acme, alice, version)
    with pytest.raises(PermissionDenied, match="requester"):
        grant_exception(exc, by=alice)


def test_granting_needs_the_manage_policies_role(acme, version, alice, bob):
    exc = ask(acme, alice, version)
    with pytest.raises(PermissionDenied, match="manage_policies"):
        grant_exception(exc, by=bob)


def test_exfil_needs_a_second_grantor(acme, version, bob, alice, dave):
    exc = ask(acme, bob, version, tool="send_report", action_class="exfil")
    grant_exception(exc, by=alice)
    exc.refresh_from_db()
    assert exc.status == ExceptionStatus.AWAITING_SECOND
    assert decide(acme, "send_report", "exfil").effect == "require_approval"
    with pytest.raises(PermissionDenied, match="second"):
        grant_exception(exc, by=alice)
    grant_exception(exc, by=dave)
    assert decide(acme, "send_report", "exfil").effect == "allow"


def test_an_exception_expires_and_can_be_revoked(acme, version, bob, alice):
    now = timezone.now()
    past = ask(acme, bob, version, starts_at=now - timedelta(hours=3),
               ends_at=now - timedelta(hours=1))
    grant_exception(past, by=alice)
    assert decide(acme).effect == "deny"
    current = ask(acme, bob, version)
    grant_exception(current, by=alice)
    assert decide(acme).effect == "allow"
    revoke_exception(current, by=alice)
    assert decide(acme).effect == "deny"


def test_an_exception_is_bound_to_its_policy_version(acme, version, bob, alice, publish):
    exc = ask(acme, bob, version)
    grant_exception(exc, by=alice)
    publish(RULES)  # a new version: the old exception no longer applies
    assert decide(acme).effect == "deny"


def test_a_sandbox_decision_from_a_loaded_context_matches_decide_tool_call(acme, version, bob,
                                                                           alice):
    from policies.services import decision_context, unsaved_sandbox_decision

    grant_exception(ask(acme, bob, version, agent_id=""), by=alice)  # no key asks in a replay
    context = decision_context(acme)
    for tool, action_class, agent in (("delete_record", "delete", "cleaner"),
                                      ("delete_record", "delete", "someone-else"),
                                      ("send_report", "exfil", "cleaner"),
                                      ("lookup", "read", "cleaner")):
        call = ProposedCall(tool=tool, action_class=action_class, arguments={"n": 1},
                            agent_id=agent, mode="sandbox")
        stored = decide_tool_call(acme, call, open_approval=False)
        unsaved = unsaved_sandbox_decision(context, call)
        assert unsaved.pk is None
        assert (unsaved.effect, unsaved.reason, unsaved.matched_rules, unsaved.exception,
                unsaved.policy_version, unsaved.input) == (
            stored.effect, stored.reason, stored.matched_rules, stored.exception,
            stored.policy_version, stored.input)
        assert stored.approval is None


def test_a_loaded_context_still_checks_the_exception_window_at_decision_time(
        acme, version, bob, alice):
    from policies.services import decision_context, unsaved_sandbox_decision

    now = timezone.now()
    grant_exception(ask(acme, bob, version, starts_at=now + timedelta(hours=1),
                        ends_at=now + timedelta(hours=2)), by=alice)
    call = ProposedCall(tool="delete_record", action_class="delete", arguments={},
                        agent_id="cleaner", mode="sandbox")
    assert unsaved_sandbox_decision(decision_context(acme), call).effect == "deny"  # not yet


def test_an_api_key_cannot_grant_an_exception_even_with_the_role(acme, version, bob):
    """A key cannot show it is not whoever asked, and a grant names a person on the record."""
    from core.actors import ApiKeyPrincipal

    with setting_up():
        key, _ = issue_api_key(acme, "governance bot", ["manage_policies"])
    principal = ApiKeyPrincipal(ApiKey.objects.select_related("tenant").get(pk=key.pk))
    exc = ask(acme, bob, version)
    with pytest.raises(PermissionDenied, match="granted by a person"):
        grant_exception(exc, by=principal)
    exc.refresh_from_db()
    assert exc.status == ExceptionStatus.REQUESTED
