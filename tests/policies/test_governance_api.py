"""Back-tests and governed exceptions from the API: the same services, roles and four-eyes
rules as the admin, and nothing of another tenant."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from policies.models import BackTest, GovernedException, Policy, Rule
from policies.services import create_draft
from policies.tasks import run_backtest
from runs.models import ToolCall

LONG_AGO, LATER = "2000-01-01T00:00:00Z", "2100-01-01T00:00:00Z"


def test_a_governor_backtests_a_draft_and_reads_every_changed_call(
        acme, alice, publish, record, make_run, user_client):
    record(acme, *[make_run() for _ in range(6)])
    tools = publish([{"name": "allow all", "effect": "allow"}])
    draft = create_draft(tools.policy, by=alice, change_note="block exfil")
    Rule.objects.create(tenant=acme, version=draft, name="no exfil", action_classes=["exfil"],
                        effect="deny")
    api = user_client(alice)

    versions = api.get("/api/v1/policy-versions/?status=draft").json()["results"]
    assert [v["id"] for v in versions] == [draft.pk]
    started = api.post(f"/api/v1/policy-versions/{draft.pk}/backtests/",
                       {"window_from": LONG_AGO, "window_to": LATER}, format="json")
    assert started.status_code == 202, started.content
    assert started.json()["status"] == "queued"
    run_backtest.apply(args=(started.json()["id"],))

    test = api.get(f"/api/v1/backtests/{started.json()['id']}/").json()
    exfil = ToolCall.objects.filter(tenant=acme, action_class="exfil")
    assert (test["status"], test["percent"], test["changed"]) == ("done", 100, exfil.count())
    assert sum(row["calls"] for row in test["counts"].values()) == test["total"]
    changes = api.get(f"/api/v1/backtests/{test['id']}/changes/").json()["results"]
    assert {c["call_id"] for c in changes} == set(exfil.values_list("call_id", flat=True))
    assert all(c["timeline"].endswith(f"#tool_call-{c['call_id']}") for c in changes)


def test_a_backwards_window_is_refused_with_nothing_queued(acme, alice, publish, user_client):
    draft = create_draft(publish([]).policy, by=alice, change_note="x")
    answer = user_client(alice).post(f"/api/v1/policy-versions/{draft.pk}/backtests/",
                                     {"window_from": LATER, "window_to": LONG_AGO},
                                     format="json")
    assert answer.status_code == 400
    assert answer.json() == {"detail": "the window must end after it starts"}
    assert not BackTest.objects.exists()


def test_another_tenants_versions_and_backtests_are_not_found(
        acme, globex, alice, charlie, publish, user_client):
    draft = create_draft(publish([]).policy, by=alice, change_note="x")
    api = user_client(alice)
    test = api.post(f"/api/v1/policy-versions/{draft.pk}/backtests/",
                    {"window_from": LONG_AGO, "window_to": LATER}, format="json").json()
    outsider = user_client(charlie)  # every role, on globex
    assert outsider.get("/api/v1/policy-versions/").json()["results"] == []
    assert outsider.post(f"/api/v1/policy-versions/{draft.pk}/backtests/",
                         {"window_from": LONG_AGO, "window_to": LATER},
                         format="json").status_code == 404
    assert outsider.get(f"/api/v1/backtests/{test['id']}/").status_code == 404
    assert outsider.get(f"/api/v1/backtests/{test['id']}/changes/").status_code == 404
    assert outsider.get("/api/v1/backtests/").json()["results"] == []


def _ask(api, version, **overrides):
    now = timezone.now()
    body = {"policy_version": version.pk, "tool": "delete_record", "action_class": "delete",
            "justification": "GDPR erasure backlog, PRIV-9", "starts_at": now.isoformat(),
            "ends_at": (now + timedelta(hours=2)).isoformat(), **overrides}
    return api.post("/api/v1/exceptions/", body, format="json")


def test_an_operator_asks_and_a_governor_grants_then_revokes(
        acme, alice, olivia, publish, user_client):
    version = publish([{"name": "no deletes", "action_classes": ["delete"], "effect": "deny"}])
    asked = _ask(user_client(olivia), version)
    assert asked.status_code == 201, asked.content
    exc = asked.json()
    assert (exc["status"], exc["requested_by"], exc["tenant"]) == ("requested", "olivia",
                                                                    "acme")
    own = user_client(olivia).post(f"/api/v1/exceptions/{exc['id']}/grant/")
    assert own.status_code == 404  # olivia governs nothing: no exception is hers to grant

    governor = user_client(alice)
    granted = governor.post(f"/api/v1/exceptions/{exc['id']}/grant/").json()
    assert (granted["status"], granted["granted_by"]) == ("active", "alice")
    assert [e["id"] for e in governor.get("/api/v1/exceptions/?status=active").json()[
        "results"]] == [exc["id"]]
    revoked = governor.post(f"/api/v1/exceptions/{exc['id']}/revoke/").json()
    assert revoked["status"] == "revoked"


def test_the_requester_cannot_grant_their_own_exception(acme, alice, publish, user_client):
    version = publish([])
    exc = _ask(user_client(alice), version).json()
    answer = user_client(alice).post(f"/api/v1/exceptions/{exc['id']}/grant/")
    assert answer.status_code == 403
    assert "separation of duties" in answer.json()["detail"]
    assert GovernedException.objects.get(pk=exc["id"]).status == "requested"


def test_no_exception_on_another_tenants_policy_and_none_by_an_api_key(
        acme, globex, alice, charlie, publish, key_client, user_client):
    version = publish([])
    refused = _ask(user_client(charlie), version)  # charlie governs globex only
    assert refused.status_code == 400
    assert "policy_version" in refused.json()
    keyed = _ask(key_client(acme, ["ingest", "manage_policies", "operate"]), version)
    assert keyed.status_code in (400, 403)
    exc = _ask(user_client(alice), version).json()
    for step in ("grant", "revoke"):
        assert user_client(charlie).post(f"/api/v1/exceptions/{exc['id']}/{step}/"
                                         ).status_code == 404
    assert GovernedException.objects.get(pk=exc["id"]).status == "requested"
    assert GovernedException.objects.count() == 1


def test_an_exception_needs_a_justification_and_a_window_that_ends_after_it_starts(
        acme, alice, publish, user_client):
    version = publish([])
    api = user_client(alice)
    assert "justification" in str(_ask(api, version, justification="  ").json())
    now = timezone.now()
    backwards = _ask(api, version, starts_at=now.isoformat(),
                     ends_at=(now - timedelta(hours=1)).isoformat())
    assert backwards.status_code == 400
    assert "ends after it starts" in str(backwards.json())
    assert not GovernedException.objects.exists()
    assert Policy.objects.count() == 1
