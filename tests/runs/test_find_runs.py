"""Finding runs by part of an id: exact, then prefix, then contains, newest first, within the
reader's tenants, and never through what the reader's redaction hides."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from core.roles import Role
from core.services import grant_role
from ledger_portal.cli import main
from runs.admin_filters import DATE_FORMATS
from runs.services import find_runs

STRIPE_KEY = "sk_live_Tr1gg3rS3cr3tV4lu3xyz12"  # the secret detector finds it anywhere
EMAIL = "ada.lovelace@example.com"  # personal data: hidden from a strict reader


def a_run(run_id: str, agent_id: str = "billing-agent", trigger_ref: str = "",
          started: datetime | None = None) -> dict[str, Any]:
    started = started or timezone.now() - timedelta(hours=1)
    return {"run_id": run_id, "agent_id": agent_id, "goal": "work", "status": "succeeded",
            "trigger_ref": trigger_ref, "started_at": started.isoformat(),
            "ended_at": (started + timedelta(seconds=5)).isoformat()}


@pytest.fixture
def reader(acme):
    """A strict reader: may view the ledger, may not lift its redaction."""
    from django.contrib.auth.models import User

    user = User.objects.create_user("reader", password="pw-for-tests-only", is_staff=True)
    grant_role(user, Role.VIEW_LEDGER, acme)
    return user


def found(user: Any, query: str, **kwargs: Any) -> list[tuple[str, str, str]]:
    return [(m.run.run_id, m.field, m.how) for m in find_runs(user, query, **kwargs).matches]


# -- what matches, in which order ------------------------------------------------------------

def test_exact_comes_before_prefix_before_contains_each_newest_first(alice, acme, record):
    for run_id in ("hotfix-deploy-7", "deploy-7-retry", "deploy-7", "deploy-7-again",
                   "old-deploy-7-x", "unrelated"):
        record(acme, a_run(run_id))
    assert found(alice, "deploy-7") == [
        ("deploy-7", "run_id", "exact"),
        ("deploy-7-again", "run_id", "prefix"), ("deploy-7-retry", "run_id", "prefix"),
        ("old-deploy-7-x", "run_id", "contains"), ("hotfix-deploy-7", "run_id", "contains"),
    ]


def test_prefix_and_contains_ignore_case_exact_does_not(alice, acme, record):
    record(acme, a_run("Deploy-42"))
    assert found(alice, "deploy-4") == [("Deploy-42", "run_id", "prefix")]
    assert found(alice, "PLOY-42") == [("Deploy-42", "run_id", "contains")]
    assert found(alice, "Deploy-42") == [("Deploy-42", "run_id", "exact")]


def test_agent_ids_and_trigger_references_match_by_part_too(alice, acme, record):
    record(acme, a_run("r-1", agent_id="infra-oncall"), a_run("r-2", trigger_ref="ALERT-4711"),
           a_run("r-3", agent_id="billing-agent"))
    assert found(alice, "infra") == [("r-1", "agent_id", "prefix")]
    assert found(alice, "oncall") == [("r-1", "agent_id", "contains")]
    assert found(alice, "ALERT-47") == [("r-2", "trigger_ref", "prefix")]
    assert found(alice, "4711") == [("r-2", "trigger_ref", "contains")]


def test_an_agent_id_is_matched_on_the_agents_before_any_run_is_read(alice, acme, record):
    """Joined to the runs, a part no agent has made PostgreSQL walk every run of the tenant
    (240 ms a way at 10,000,000 tool calls): the agents are asked first, and the runs only for
    the agents found."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from runs.models import Agent, Run
    from runs.search import candidates

    record(acme, a_run("r-1", agent_id="infra-oncall"), a_run("r-2", agent_id="billing-agent"))
    runs = Run.objects.for_user(alice, Role.VIEW_LEDGER)
    agents = Agent.objects.for_user(alice, Role.VIEW_LEDGER)
    with CaptureQueriesContext(connection) as asked:
        assert list(candidates(runs, "agent_id", "contains", "no-such-agent", 51, agents)) == []
    assert [q["sql"].split(" FROM ")[1].split()[0] for q in asked.captured_queries] == [
        '"runs_agent"']
    rows = list(candidates(runs, "agent_id", "prefix", "INFRA", 51, agents))
    assert [(run_id, agent_id) for run_id, _, agent_id in rows] == [
        (Run.objects.get(run_id="r-1").pk, "infra-oncall")]


def test_a_run_is_listed_once_under_its_best_match(alice, acme, record):
    record(acme, a_run("billing-7", agent_id="billing-agent", trigger_ref="billing-alert"))
    assert found(alice, "billing") == [("billing-7", "run_id", "prefix")]


def test_contains_needs_three_characters(alice, acme, record):
    record(acme, a_run("ab-1"), a_run("x-ab"))
    search = find_runs(alice, "ab")
    assert [(m.run.run_id, m.how) for m in search.matches] == [("ab-1", "prefix")]
    assert search.contains_skipped
    assert not find_runs(alice, "ab-").contains_skipped


def test_the_matches_are_capped_and_say_there_are_more(alice, acme, record):
    record(acme, *[a_run(f"batch-{n:02d}") for n in range(7)])
    search = find_runs(alice, "batch-", limit=5)
    assert [m.run.run_id for m in search.matches] == [f"batch-{n:02d}" for n in (6, 5, 4, 3, 2)]
    assert search.more
    assert not find_runs(alice, "batch-", limit=7).more


def test_another_tenants_runs_are_never_found(alice, charlie, acme, globex, record):
    record(acme, a_run("shared-name-acme", agent_id="shared-agent", trigger_ref="TICKET-1"))
    record(globex, a_run("shared-name-globex", agent_id="shared-agent", trigger_ref="TICKET-2"))
    for query in ("shared-name", "name", "shared-agent", "agent", "TICKET", "ICKET",
                  "shared-name-globex"):
        assert {run_id for run_id, _, _ in found(alice, query)} <= {"shared-name-acme"}
        assert {run_id for run_id, _, _ in found(charlie, query)} <= {"shared-name-globex"}
    assert found(alice, "shared-name-globex") == []
    assert found(alice, "name", tenant_slug="globex") == []


# -- the redaction oracle --------------------------------------------------------------------

def test_a_secret_in_a_trigger_reference_cannot_be_probed_by_its_parts(reader, acme, record):
    """A strict reader sees ``pagerduty:INC-42:[redacted:secret]``: a prefix or part of the
    hidden key must find nothing, or the search box reads it out a character at a time."""
    record(acme, a_run("run-secret", trigger_ref=f"pagerduty:INC-42:{STRIPE_KEY}"),
           a_run("run-leading-secret", trigger_ref=f"{STRIPE_KEY}:webhook"))
    assert found(reader, "pagerduty:INC") == [("run-secret", "trigger_ref", "prefix")]
    assert found(reader, "INC-42") == [("run-secret", "trigger_ref", "contains")]
    for probe in (STRIPE_KEY[:12], STRIPE_KEY[:20], STRIPE_KEY[8:16], "Tr1gg3r",
                  f"INC-42:{STRIPE_KEY[:10]}", f"pagerduty:INC-42:{STRIPE_KEY[:9]}"):
        assert found(reader, probe) == [], probe


def test_a_guess_of_a_whole_hidden_trigger_reference_is_not_confirmed(reader, acme, record):
    """An exact match on the stored value would confirm a guess (an e-mail address, a short
    password) that the reader only ever sees as a marker."""
    record(acme, a_run("run-mail", trigger_ref=EMAIL), a_run("run-plain", trigger_ref="REQ-9"))
    assert found(reader, EMAIL) == []
    assert found(reader, "ada.lovelace") == []
    assert found(reader, "REQ-9") == [("run-plain", "trigger_ref", "exact")]


def test_the_page_api_and_cli_do_not_confirm_a_hidden_trigger_reference(reader, acme, record,
                                                                       key_client, client,
                                                                       capsys):
    record(acme, a_run("run-mail", trigger_ref=EMAIL))
    client.force_login(reader)
    assert client.get(reverse("find-run"), {"q": EMAIL}).context["matches"] == []
    api = key_client(acme, ["view_ledger"])
    for params in ({"q": EMAIL}, {"q": "ada.love"}, {"trigger_ref": EMAIL}):
        assert api.get(reverse("api:run-list"), params).json()["results"] == [], params
    assert main(["--as", "reader", "find", EMAIL]) != 0


# -- the page --------------------------------------------------------------------------------

def test_the_page_names_the_field_and_the_way_each_run_matched(alice, acme, record, client):
    record(acme, a_run("deploy-1"), a_run("deploy-2"), a_run("r-9", trigger_ref="deploy-ticket"))
    client.force_login(alice)
    response = client.get(reverse("find-run"), {"q": "deploy"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "run_id (prefix)" in html
    assert "trigger_ref (prefix)" in html


def test_one_exact_match_still_opens_its_timeline(alice, acme, record, client):
    record(acme, a_run("deploy-1"), a_run("deploy-10"), a_run("deploy-11"))
    client.force_login(alice)
    response = client.get(reverse("find-run"), {"q": "deploy-1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("run-timeline", args=["acme", "deploy-1"])


def test_nothing_found_says_what_was_searched_and_where_to_look_next(alice, acme, record,
                                                                     client):
    record(acme, a_run("deploy-1"))
    client.force_login(alice)
    html = client.get(reverse("find-run"), {"q": "zz"}).content.decode()
    assert 'id="no-match"' in html
    assert "zz" in html
    assert "3 characters" in html  # why a part in the middle was not looked for
    assert reverse("admin:runs_run_changelist") in html
    longer = client.get(reverse("find-run"), {"q": "nothing-like-it"}).content.decode()
    assert 'id="no-match"' in longer
    assert "3 characters" not in longer


# -- the lists' filters ----------------------------------------------------------------------

def test_the_runs_list_filters_by_the_agents_of_ones_own_tenants(alice, acme, globex, record,
                                                                client):
    from runs.models import Agent

    record(acme, a_run("r-billing", agent_id="billing-agent"),
           a_run("r-infra", agent_id="infra-oncall"))
    record(globex, a_run("r-globex", agent_id="globex-secret-project"))
    client.force_login(alice)
    url = reverse("admin:runs_run_changelist")
    response = client.get(url)
    offered = next(spec for spec in response.context["cl"].filter_specs
                   if spec.title == "agent")
    assert [label for _, label in offered.lookup_choices] == [
        "billing-agent (acme)", "infra-oncall (acme)"]
    assert "globex-secret-project" not in response.content.decode()
    infra = Agent.objects.get(tenant=acme, agent_id="infra-oncall")
    listed = client.get(url, {"agent": infra.pk}).context["cl"].result_list
    assert [r.run_id for r in listed] == ["r-infra"]
    foreign = Agent.objects.get(tenant=globex)
    assert list(client.get(url, {"agent": foreign.pk}).context["cl"].result_list) == []


def test_the_runs_list_filters_by_a_start_date_range(alice, acme, record, client):
    day = timezone.now().replace(hour=12, minute=0, second=0, microsecond=0)
    record(acme, a_run("r-old", started=day - timedelta(days=10)),
           a_run("r-mid", started=day - timedelta(days=5)), a_run("r-new", started=day))
    client.force_login(alice)
    url = reverse("admin:runs_run_changelist")

    def listed(**params: str) -> list[str]:
        response = client.get(url, params)
        assert response.status_code == 200
        return [r.run_id for r in response.context["cl"].result_list]

    fmt = "%Y-%m-%d"
    mid = (day - timedelta(days=5)).strftime(fmt)
    assert listed(started_from=mid) == ["r-new", "r-mid"]
    assert listed(started_to=mid) == ["r-mid", "r-old"]  # the whole day 'to' names
    assert listed(started_from=mid, started_to=mid) == ["r-mid"]
    assert listed(started_from=(day - timedelta(days=5, hours=1)).isoformat(),
                  started_to=(day - timedelta(days=4)).isoformat()) == ["r-mid"]


def test_a_bad_date_is_a_message_not_an_error(alice, acme, record, client):
    record(acme, a_run("r-1"))
    client.force_login(alice)
    for url in (reverse("admin:runs_run_changelist"), reverse("admin:runs_toolcall_changelist")):
        response = client.get(url, {"started_from": "yesterday-ish"}, follow=True)
        assert response.status_code == 200
        shown = [str(m) for m in response.context["messages"]]
        assert [m for m in shown if "yesterday-ish" in m and "YYYY-MM-DD" in m] == [
            f"started from: 'yesterday-ish' is not a date or time: use {DATE_FORMATS}; "
            "not applied."], shown


def test_tool_calls_filter_by_the_tools_of_ones_own_tenants_and_by_time(alice, acme, globex,
                                                                       record, make_run,
                                                                       client):
    from runs.models import Tool, ToolCall

    record(acme, make_run())
    record(globex, make_run("globex"))
    foreign_tool = Tool.objects.filter(tenant=globex)[0]
    Tool.objects.filter(pk=foreign_tool.pk).update(name="globex-only-tool")
    client.force_login(alice)
    url = reverse("admin:runs_toolcall_changelist")
    html = client.get(url).content.decode()
    assert "globex-only-tool" not in html
    tool = Tool.objects.filter(tenant=acme)[0]
    calls = client.get(url, {"tool": tool.pk}).context["cl"].result_list
    assert calls
    assert {c.tool_id for c in calls} == {tool.pk}
    assert list(client.get(url, {"tool": foreign_tool.pk}).context["cl"].result_list) == []
    first = ToolCall.objects.filter(tenant=acme).order_by("started_at")[0]
    after = client.get(url, {"started_from": (first.started_at + timedelta(microseconds=1))
                             .isoformat()}).context["cl"].result_list
    assert first.pk not in {c.pk for c in after}
    assert len(after) == ToolCall.objects.filter(tenant=acme).count() - 1


def test_the_admin_lists_find_runs_by_a_prefix_of_their_ids(alice, acme, record, make_run,
                                                            client):
    run = make_run()
    record(acme, run, a_run("other-run"))
    client.force_login(alice)
    prefix = run["run_id"][:-2]
    runs = client.get(reverse("admin:runs_run_changelist"), {"q": prefix}).context["cl"]
    assert [r.run_id for r in runs.result_list] == [run["run_id"]]
    calls = client.get(reverse("admin:runs_toolcall_changelist"), {"q": prefix}).context["cl"]
    assert {c.run_id for c in calls.result_list} == {runs.result_list[0].pk}


def test_the_admin_search_does_not_confirm_a_hidden_trigger_reference(reader, acme, record,
                                                                      client):
    record(acme, a_run("run-mail", trigger_ref=EMAIL))
    client.force_login(reader)
    for query in (EMAIL, "ada.lovelace"):
        listed = client.get(reverse("admin:runs_run_changelist"), {"q": query}).context["cl"]
        assert list(listed.result_list) == [], query


def test_the_api_finds_by_part_and_filters_by_agent_status_and_time(acme, record, key_client):
    now = timezone.now()
    record(acme, a_run("api-1", agent_id="infra-oncall", started=now - timedelta(days=3)),
           {**a_run("api-2", started=now - timedelta(hours=1)), "status": "failed"})
    api = key_client(acme, ["view_ledger"])
    url = reverse("api:run-list")

    def run_ids(**params: str) -> list[str]:
        response = api.get(url, params)
        assert response.status_code == 200, response.content
        return [r["run_id"] for r in response.json()["results"]]

    assert run_ids(q="api-") == ["api-2", "api-1"]
    assert run_ids(agent_id="infra-oncall") == ["api-1"]
    assert run_ids(status="failed") == ["api-2"]
    assert run_ids(started_after=(now - timedelta(days=1)).isoformat()) == ["api-2"]
    assert run_ids(started_before=(now - timedelta(days=1)).isoformat()) == ["api-1"]
    assert api.get(url, {"started_after": "soon"}).status_code == 400


# -- PostgreSQL: the index serves the search -------------------------------------------------

@pytest.mark.postgres
@pytest.mark.tenant_scope_exempt(reason="reads query plans, outside any request")
def test_prefix_and_contains_searches_use_the_trigram_indexes(alice, acme):
    """The plan, not a timing: with sequential scans off, over a tenant of 3,000 runs and
    agents (fewer, and its tenant index is the cheaper plan), the search's own queries for a
    part of a random id are answered from the trigram indexes of migration 0024."""
    import hashlib

    from django.db import connection

    from runs.models import Agent, Run
    from runs.search import How, candidates, matching_agents

    digests = [hashlib.md5(str(n).encode()).hexdigest() for n in range(3000)]
    agents = Agent.objects.bulk_create([Agent(tenant=acme, agent_id=f"agent-{digest[3:]}")
                                        for digest in digests])
    now = timezone.now()
    Run.objects.bulk_create(
        [Run(tenant=acme, seq=0, content_hash="0" * 64, chain_hash="0" * 64, head_hash="0" * 64,
             run_id=f"run-{digest}", trigger_ref=f"REQ-{digest[::-1]}", agent=agent,
             started_at=now) for digest, agent in zip(digests, agents, strict=True)])
    part = digests[77]
    runs = Run.objects.for_user(alice, Role.VIEW_LEDGER)

    def plan(queryset: Any) -> str:
        sql, params = queryset.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        return "\n".join(row[0] for row in cursor.fetchall())

    with connection.cursor() as cursor:
        for index in ("run_run_id_trgm", "run_trigger_ref_trgm", "agent_agent_id_trgm"):
            # what autovacuum does after inserts: the GIN pending list into the index proper
            cursor.execute("SELECT gin_clean_pending_list(%s::regclass)", [index])
        cursor.execute("ANALYZE runs_run")
        cursor.execute("ANALYZE runs_agent")
        cursor.execute("SET LOCAL enable_seqscan = off")
        for column, prefix, middle in (
                ("run_id", f"run-{part[:6]}", part[8:14]),
                ("trigger_ref", f"req-{part[::-1][:6]}", part[::-1][8:14]),
                ("agent_id", f"agent-{part[3:9]}", part[10:16])):
            index = "agent_agent_id_trgm" if column == "agent_id" else f"run_{column}_trgm"
            ways: tuple[tuple[How, str], ...] = (("prefix", prefix), ("contains", middle))
            for how, query in ways:
                shown = plan(matching_agents(Agent.objects.for_user(alice, Role.VIEW_LEDGER),
                                             how, query) if column == "agent_id"
                             else candidates(runs, column, how, query, 51))
                assert f"Bitmap Index Scan on {index}" in shown, (column, how, shown)
