"""Long runs: the API pages a run's records with a cursor, and the timeline page shows each
step with its first calls and loads the rest of a step on demand; both redact as the run
detail does, and neither reaches another tenant's run."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from runs import timeline
from runs.api import views as api_views
from runs.sample_runs import big_run
from tests.runs.redaction_corpus import PLANTED, planted_run

pytestmark = pytest.mark.django_db

ROW = re.compile(r'<tr id="([^"]+)" class="kind-')


@pytest.fixture
def reader(acme, key_client):
    return key_client(acme, ["view_ledger"])


@pytest.fixture
def long_run(acme, record) -> dict[str, Any]:
    """72 records: 6 steps, each with a model call and 10 tool calls (one a retry)."""
    run = big_run("acme", tool_calls=60, steps=6)
    record(acme, run)
    return run


def walk_cursor(client: Any, run_id: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Every page of the records cursor, following ``next`` until it is null."""
    url: str | None = reverse("api:run-records", args=[run_id])
    query: dict[str, Any] = {"limit": limit, **params}
    seen: list[dict[str, Any]] = []
    for _ in range(1000):  # bounded: a cursor that never ends fails below
        if url is None:
            return seen
        page = client.get(url, query)
        assert page.status_code == 200, page.content
        body = page.json()
        assert len(body["results"]) <= limit
        seen += body["results"]
        url, query = body["next"], {}
    raise AssertionError("the cursor never ended")


def test_the_records_cursor_returns_every_record_exactly_once_in_chain_order(reader, long_run):
    whole = reader.get(reverse("api:run-detail", args=[long_run["run_id"]])).json()
    records = walk_cursor(reader, long_run["run_id"], limit=7)
    assert [r["seq"] for r in records] == list(range(1, whole["last_seq"] + 1))
    assert records == whole["timeline"]
    assert sum(r["kind"] == "tool_call" for r in records) == 60


def test_a_bad_cursor_or_limit_is_a_400(reader, long_run):
    url = reverse("api:run-records", args=[long_run["run_id"]])
    assert reader.get(url, {"cursor": "drop table"}).status_code == 400
    assert reader.get(url, {"limit": "0"}).status_code == 400
    assert reader.get(url, {"limit": "100000"}).status_code == 400


def test_the_cursor_shows_nothing_of_another_tenant(acme, globex, record, reader, key_client):
    ours = big_run("acme", tool_calls=20, steps=2)
    theirs = big_run("globex", tool_calls=20, steps=2)
    theirs["run_id"] = ours["run_id"]  # the same external id in both tenants
    theirs["tool_calls"] = [{**c, "call_id": "globex-" + c["call_id"],
                             "retry_of": c["retry_of"] and "globex-" + c["retry_of"]}
                            for c in theirs["tool_calls"]]
    record(acme, ours)
    record(globex, theirs)
    records = walk_cursor(reader, ours["run_id"], limit=5)
    call_ids = {r["call_id"] for r in records if r["kind"] == "tool_call"}
    assert call_ids == {c["call_id"] for c in ours["tool_calls"]}
    outsider = key_client(globex, ["view_ledger"])
    only_theirs = walk_cursor(outsider, ours["run_id"], limit=50)
    assert not call_ids & {r.get("call_id") for r in only_theirs}
    foreign = big_run("acme", tool_calls=5, steps=1)
    foreign["run_id"] = "acme-only-run"
    record(acme, foreign)
    answer = outsider.get(reverse("api:run-records", args=["acme-only-run"]))
    assert answer.status_code == 404


def test_the_cursor_redacts_as_the_run_detail_does(acme, record, reader):
    record(acme, planted_run("leaky-long-run", model_calls=5))
    whole = reader.get(reverse("api:run-detail", args=["leaky-long-run"]))
    records = walk_cursor(reader, "leaky-long-run", limit=9)
    assert records == whole.json()["timeline"]
    text = str(records)
    assert [secret for secret in PLANTED if secret in text] == []
    assert all(r.get("content_hash") is None for r in records)  # commitments, not hashes
    assert all("commitment" in r for r in records)


def test_a_long_runs_detail_stops_at_the_cap_and_links_to_the_cursor(reader, long_run,
                                                                    monkeypatch):
    monkeypatch.setattr(api_views, "RUN_DETAIL_MAX_RECORDS", 25)
    body = reader.get(reverse("api:run-detail", args=[long_run["run_id"]])).json()
    assert [e["seq"] for e in body["timeline"]] == list(range(1, 26))
    assert body["timeline_next"] is not None
    rest = reader.get(body["timeline_next"]).json()
    assert rest["results"][0]["seq"] == 26


def test_a_short_runs_detail_is_whole_with_no_link(reader, long_run):
    body = reader.get(reverse("api:run-detail", args=[long_run["run_id"]])).json()
    assert len(body["timeline"]) == body["last_seq"]
    assert body["timeline_next"] is None


# -- the page ------------------------------------------------------------------------------


@pytest.fixture
def short_pages(monkeypatch):
    """Make a 72-record run "long": 3 calls a step shown, the rest on demand, 4 per fragment."""
    monkeypatch.setattr(timeline, "LONG_RUN_RECORDS", 20)
    monkeypatch.setattr(timeline, "CALLS_SHOWN_PER_STEP", 3)
    monkeypatch.setattr(timeline, "CALLS_PER_FRAGMENT", 4)


def rows_of(html: str) -> list[str]:
    return ROW.findall(html)


def test_a_long_runs_page_shows_each_step_with_its_first_calls_only(
        acme, alice, client, long_run, short_pages):
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", long_run["run_id"]]))
    assert page.status_code == 200
    html = page.content.decode()
    shown = rows_of(html)
    steps = [r for r in shown if r.startswith("step-")]
    calls = [r for r in shown if r.startswith(("tool_call-", "model_call-"))]
    assert len(steps) == 6
    # bounded, whatever the run's length: rows per step, not per record
    assert len(calls) <= 6 * 3 * 2  # 3 tool calls and 3 model calls a step, at most
    assert html.count('class="more-calls"') == 6


def test_following_the_links_without_javascript_shows_every_call_once(
        acme, alice, client, long_run, short_pages):
    client.force_login(alice)
    html = client.get(reverse("run-timeline", args=["acme", long_run["run_id"]])
                      ).content.decode()
    seen = [r for r in rows_of(html) if r.startswith(("tool_call-", "model_call-"))]
    links = re.findall(r'<a class="more-calls-link" href="([^"]+)"', html)
    for _ in range(200):  # bounded
        if not links:
            break
        more = client.get(links.pop(0).replace("&amp;", "&"))
        assert more.status_code == 200
        body = more.content.decode()
        assert "<html" in body  # a page of its own, for a reader without JavaScript
        seen += [r for r in rows_of(body) if r.startswith(("tool_call-", "model_call-"))]
        links += re.findall(r'<a class="more-calls-link" href="([^"]+)"', body)
    expected = [f"tool_call-{c['call_id']}" for c in long_run["tool_calls"]] + [
        f"model_call-{c['call_id']}" for c in long_run["model_calls"]]
    assert sorted(seen) == sorted(expected)


def test_the_fragment_is_rows_only_and_redacted(acme, alice, client, record, short_pages):
    record(acme, planted_run("leaky-page-run", model_calls=5))
    client.force_login(alice)
    html = client.get(reverse("run-timeline", args=["acme", "leaky-page-run"])).content.decode()
    link = re.findall(r'<a class="more-calls-link" href="([^"]+)"', html)[0].replace("&amp;",
                                                                                     "&")
    seen = ""
    for _ in range(100):
        fragment = client.get(link + "&fragment=1")
        assert fragment.status_code == 200
        body = fragment.content.decode()
        assert "<html" not in body
        assert body.lstrip().startswith("<tr")
        seen += body
        more = re.findall(r'<a class="more-calls-link" href="([^"]+)"', body)
        if not more:
            break
        link = more[0].replace("&amp;", "&")
    assert len(rows_of(seen)) > 10
    assert [secret for secret in PLANTED if secret in seen] == []
    assert 'class="redacted"' in seen


def test_nobody_loads_another_tenants_step(acme, charlie, client, long_run, short_pages):
    client.force_login(charlie)
    url = reverse("run-step-calls", args=["acme", long_run["run_id"]])
    assert client.get(url, {"step": "s1"}).status_code == 404
    assert client.get(url + "?step=s1&fragment=1").status_code == 404
    assert client.get(reverse("run-step-calls", args=["globex", long_run["run_id"]]),
                      {"step": "s1"}).status_code == 404


def test_a_short_runs_page_is_whole(acme, alice, client, long_run):
    client.force_login(alice)
    html = client.get(reverse("run-timeline", args=["acme", long_run["run_id"]])
                      ).content.decode()
    assert 'class="more-calls"' not in html
    assert len(rows_of(html)) == 6 + 6 + 60 + 1  # steps, model and tool calls, run status


def test_a_long_runs_page_lists_a_bounded_number_of_steps(acme, alice, client, long_run,
                                                          short_pages, monkeypatch):
    monkeypatch.setattr(timeline, "STEPS_SHOWN", 2)
    client.force_login(alice)
    html = client.get(reverse("run-timeline", args=["acme", long_run["run_id"]])
                      ).content.decode()
    shown = rows_of(html)
    assert [r for r in shown if r.startswith("step-")] == ["step-s1", "step-s2"]
    calls = [r for r in shown if r.startswith(("tool_call-", "model_call-"))]
    assert len(calls) <= 2 * 3 * 2  # only the listed steps' first calls
    assert "4 later steps not listed" in html
    assert reverse("api:run-records", args=[long_run["run_id"]]) in html
