"""Finding a run (page, API, CLI) and the timeline page, without a browser."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core.cli_support import EXIT_NOT_FOUND, EXIT_OK
from ledger_portal.cli import main


@pytest.fixture
def runs(acme, globex, record, make_run):
    mine = [make_run() for _ in range(3)]
    record(acme, *mine)
    record(globex, make_run("globex"))
    return mine


def test_a_run_id_lands_on_its_timeline(alice, runs, client):
    client.force_login(alice)
    response = client.get(reverse("find-run"), {"q": runs[1]["run_id"]})
    assert response.status_code == 302
    assert response["Location"] == reverse("run-timeline", args=["acme", runs[1]["run_id"]])


def test_a_trigger_reference_lands_on_its_run(alice, runs, client):
    client.force_login(alice)
    response = client.get(reverse("find-run"), {"q": runs[2]["trigger_ref"]})
    assert response["Location"].endswith(f"/{runs[2]['run_id']}/")


def test_an_agent_id_lists_that_agents_runs(alice, runs, client):
    agent = runs[0]["agent_id"]
    client.force_login(alice)
    response = client.get(reverse("find-run"), {"q": agent})
    expected = {r["run_id"] for r in runs if r["agent_id"] == agent}
    if len(expected) == 1:
        assert response.status_code == 302
    else:
        listed = {m.run_id for m in response.context["matches"]}
        assert listed == expected


def test_search_stays_within_the_users_tenants(charlie, runs, client):
    client.force_login(charlie)
    response = client.get(reverse("find-run"), {"q": runs[0]["run_id"]})
    assert response.status_code == 200
    assert response.context["matches"] == []


def test_the_api_and_cli_find_runs_too(alice, runs, key_client, acme, capsys):
    reader = key_client(acme, ["view_ledger"])
    found = reader.get(reverse("api:run-list"), {"q": runs[0]["trigger_ref"]}).json()
    assert [r["run_id"] for r in found["results"]] == [runs[0]["run_id"]]
    assert main(["--as", "alice", "find", runs[0]["trigger_ref"]]) == EXIT_OK
    assert runs[0]["run_id"] in capsys.readouterr().out
    assert main(["--as", "alice", "find", "nothing-like-this"]) == EXIT_NOT_FOUND


def test_the_timeline_shows_every_record_with_retries_under_their_call(alice, acme, record,
                                                                       make_run, client):
    run = make_run()
    first = run["tool_calls"][0]
    retry = {**first, "call_id": first["call_id"] + "-r2", "attempt": 2,
             "retry_of": first["call_id"]}
    run["tool_calls"].insert(1, retry)
    run["annotations"] = [{"annotation_id": "n1", "body": "looked at by on-call"}]
    record(acme, run)
    client.force_login(alice)
    response = client.get(reverse("run-timeline", args=["acme", run["run_id"]]))
    assert response.status_code == 200
    entries = response.context["entries"]
    top_calls = [e for e in entries if e.kind == "tool_call"]
    original = next(e for e in top_calls if e.row["call_id"] == first["call_id"])
    assert [r.row["call_id"] for r in original.retries] == [retry["call_id"]]
    assert retry["call_id"] not in {e.row["call_id"] for e in top_calls}
    assert len(top_calls) == len(run["tool_calls"]) - 1
    assert any(e.kind == "annotation" and e.row["body"] == "looked at by on-call"
               for e in entries)
    html = response.content.decode()
    assert f'id="tool_call-{retry["call_id"]}"' in html


def test_the_timeline_page_costs_the_same_queries_for_a_big_run(alice, acme, record, make_run,
                                                                 client):
    client.force_login(alice)
    small, big = make_run(), make_run()
    template = big["tool_calls"][0]
    big["tool_calls"] = [{**template, "call_id": f"{big['run_id']}-c{i}", "retry_of": None,
                          "attempt": 1} for i in range(300)]
    record(acme, small, big)

    def queries(run_id: str) -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(reverse("run-timeline", args=["acme", run_id])).status_code == 200
        return len(ctx.captured_queries)

    queries(small["run_id"])
    assert queries(big["run_id"]) == queries(small["run_id"])


def test_lighter_redaction_needs_its_role(alice, bob, acme, runs, client, key_client):
    from core.services import grant_role

    grant_role(bob, "view_ledger", acme)
    client.force_login(bob)
    url = reverse("run-timeline", args=["acme", runs[0]["run_id"]])
    assert client.get(url, {"redaction": "none"}).status_code == 403
    assert client.get(url, {"redaction": "standard"}).status_code == 403
    client.force_login(alice)  # alice holds every role, view_unredacted among them
    assert client.get(url, {"redaction": "none"}).context["redaction"] == "none"

    reader = key_client(acme, ["view_ledger"])
    api = reverse("api:run-detail", args=[runs[0]["run_id"]])
    assert reader.get(api, {"redaction": "none"}).status_code == 403
    assert reader.get(api, {"redaction": "bogus"}).status_code == 403
    assert reader.get(api).status_code == 200


def test_the_timeline_offers_the_run_as_json_redacted_as_shown(alice, acme, runs, client):
    import re

    client.force_login(alice)
    run_id = runs[0]["run_id"]
    page = client.get(reverse("run-timeline", args=["acme", run_id]), {"redaction": "standard"})
    link = re.search(r'id="run-json" href="([^"]+)"', page.content.decode())
    assert link is not None
    exported = client.get(link.group(1).replace("&amp;", "&"))
    assert exported.status_code == 200
    assert exported["Content-Type"].startswith("application/json")
    body = exported.json()
    assert body["run_id"] == run_id
    assert body["timeline"]
    assert "redaction=standard" in link.group(1)


def test_a_malformed_redaction_rule_is_a_form_error(alice, acme, client):
    from runs.models import RedactionRule

    client.force_login(alice)
    response = client.post(reverse("admin:runs_redactionrule_add"), {
        "tenant": acme.pk, "pattern": "$.input[", "label": "secret"})
    assert response.status_code == 200
    assert "pattern" in response.context["adminform"].form.errors
    assert not RedactionRule.objects.exists()


def test_ledger_text_shaped_like_the_pages_row_slot_stays_text(alice, acme, record, make_run,
                                                                client):
    """The page joins its rows in after rendering (core/rendering.py) at a placeholder: an
    agent that writes that placeholder into its goal and a payload gets it shown as text, and
    the rows appear once, inside the table."""
    slot = "<!--ledger-rendering:slot-->"
    run = make_run()
    run["goal"] = f"{slot}<script>alert(1)</script>"
    run["tool_calls"][0]["input"] = {"note": slot}
    record(acme, run)
    client.force_login(alice)
    html = client.get(reverse("run-timeline", args=["acme", run["run_id"]])).content.decode()
    assert slot not in html
    assert "<script>alert(1)" not in html
    assert html.count("&lt;!--ledger-rendering:slot--&gt;") == 2
    body = html[html.index("<tbody>"):html.index("</tbody>")]
    assert body.count('<tr id="') == len(re.findall(r'<tr id="', html)) > len(run["tool_calls"])
