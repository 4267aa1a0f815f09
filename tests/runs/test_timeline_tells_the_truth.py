"""The run timeline tells the truth (issue #13): who did each intervention and when, one date
format with its time zone, plurals right, a redaction switch offering only the levels the
reader may use, and the run's totals (duration, tokens by model, calls by status).

alice holds every role on acme; bob only reads its ledger."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from django.urls import reverse

from approvals.services import decide_approval, request_approval
from core.roles import Role
from core.services import grant_role
from runs.models import Annotation, AnnotationKind, Run
from runs.services import annotate_run

pytestmark = pytest.mark.django_db

#: The portal's one date format: "2026-12-06 13:40:05 UTC".
PORTAL_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC")
ANY_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?"
                      r"(?: ?(?:[A-Z]{2,5}\b|[+-]\d{2}:?\d{2}|Z))?")


def timeline(client: Any, run_id: str, **query: str) -> str:
    response = client.get(reverse("run-timeline", args=["acme", run_id]), query)
    assert response.status_code == 200
    return str(response.content.decode())


def row_of(page: str, anchor: str) -> str:
    found = re.search(rf'<tr[^>]* id="{re.escape(anchor)}".*?</tr>', page, re.S)
    assert found is not None, f"no row {anchor}"
    return found.group(0)


def shown(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


@pytest.fixture
def run(acme, record, make_run) -> dict[str, Any]:
    recorded = make_run()
    record(acme, recorded)
    return recorded


def test_an_intervention_shows_who_recorded_it_and_when(acme, alice, run, client):
    stored = Run.objects.get(tenant=acme, run_id=run["run_id"])
    note = annotate_run(stored, by=alice, body="paused the refund queue",
                        kind=AnnotationKind.MANUAL_OVERRIDE)
    client.force_login(alice)
    row = row_of(timeline(client, run["run_id"]), f"annotation-{note.annotation_id}")
    assert "by alice" in row
    assert shown(note.recorded_at) in row


def test_an_approval_vote_on_the_run_shows_its_approver_and_time(acme, alice, run, client):
    request = request_approval(acme, tool="send_email", action_class="exfil",
                               arguments={"to": "x@example.com"}, run_id=run["run_id"],
                               requested_by="mailer")
    decide_approval(request, by=alice, approve=True, justification="customer asked for it")
    vote = Annotation.objects.get(tenant=acme, annotation_kind=AnnotationKind.APPROVAL,
                                  run__run_id=run["run_id"])
    client.force_login(alice)
    row = row_of(timeline(client, run["run_id"]), f"annotation-{vote.annotation_id}")
    assert "first of 2 approvals" in row
    assert "by alice" in row
    assert shown(vote.recorded_at) in row


def test_every_date_on_the_page_has_one_format_with_its_time_zone(acme, alice, run, client):
    annotate_run(Run.objects.get(tenant=acme, run_id=run["run_id"]), by=alice, body="looked")
    client.force_login(alice)
    page = timeline(client, run["run_id"])
    # payloads are the agent's own content, shown as recorded: dates there are its business
    portal_text = re.sub(r"<details.*?</details>", "", page, flags=re.S)
    dates = ANY_DATE.findall(portal_text)
    assert dates, "the page shows no date at all"
    assert [d for d in dates if not PORTAL_DATE.fullmatch(d)] == []


def test_counts_of_one_are_singular(acme, alice, record, client):
    record(acme, {
        "run_id": "run-single", "agent_id": "solo", "goal": "one of each",
        "status": "failed", "started_at": "2026-01-05T10:00:00+00:00",
        "ended_at": "2026-01-05T10:00:05+00:00",
        "steps": [{"step_id": "s1", "index": 1, "title": "only step"}],
        "model_calls": [{"call_id": "m1", "provider": "openai", "model": "gpt-4o",
                         "usage": {"input_tokens": 1, "output_tokens": 1},
                         "started_at": "2026-01-05T10:00:01+00:00"}],
        "tool_calls": [{"call_id": "t1", "tool": "lookup", "action_class": "read",
                        "status": "failed", "error": {"message": "timeout"},
                        "started_at": "2026-01-05T10:00:02+00:00"}],
        "annotations": [{"annotation_id": "n1", "body": "one note"}],
    })
    client.force_login(alice)
    text = re.sub(r"<[^>]+>", "", timeline(client, "run-single"))
    assert re.findall(r"\b1 (steps|model calls|tool calls|annotations|failed calls|tokens)\b",
                      text) == []
    for singular in ("1 step", "1 model call", "1 tool call", "1 failed call", "1 token in"):
        assert singular in text


def test_the_redaction_switch_offers_only_the_levels_the_reader_may_use(acme, alice, bob, run,
                                                                       client):
    grant_role(bob, Role.VIEW_LEDGER, acme)
    client.force_login(bob)
    switch = re.search(r'id="redaction-switch".*?</(nav|div|form)>',
                       timeline(client, run["run_id"]), re.S)
    offered = re.findall(r"redaction=(\w+)", switch.group(0)) if switch else []
    assert "standard" not in offered
    assert "none" not in offered

    client.force_login(alice)
    switch = re.search(r'id="redaction-switch".*?</(nav|div|form)>',
                       timeline(client, run["run_id"]), re.S)
    assert switch is not None, "no redaction switch for a reader with every role"
    assert set(re.findall(r"redaction=(\w+)", switch.group(0))) >= {"standard", "none"}


def test_using_the_switch_is_recorded_as_a_disclosure(acme, alice, run, client):
    client.force_login(alice)
    timeline(client, run["run_id"], redaction="standard")
    disclosed = Annotation.objects.filter(tenant=acme, annotation_kind=AnnotationKind.DISCLOSURE)
    assert [(a.author_label, a.data["level"], a.data["viewing"]) for a in disclosed] == [
        ("alice", "standard", f"run {run['run_id']} (timeline page)")]


def test_the_run_totals_give_duration_tokens_by_model_and_calls_by_status(acme, alice, run,
                                                                          client):
    client.force_login(alice)
    response = client.get(reverse("run-timeline", args=["acme", run["run_id"]]))
    totals = response.context["totals"]

    tokens: dict[str, list[int]] = {}
    for call in run["model_calls"]:
        usage = call.get("usage") or {}
        counted = tokens.setdefault(call["model"], [0, 0])
        counted[0] += usage.get("input_tokens") or 0
        counted[1] += usage.get("output_tokens") or 0
    assert {t["model"]: [t["input"], t["output"]] for t in totals["tokens"]} == tokens
    assert totals["calls"] == dict(Counter(c["status"] for c in run["tool_calls"]))
    started = datetime.fromisoformat(run["started_at"])
    if run.get("ended_at"):
        ended = datetime.fromisoformat(run["ended_at"])
        assert totals["duration_s"] == pytest.approx((ended - started).total_seconds())

    page = response.content.decode()
    block = re.search(r'id="run-totals".*?</dd>', page, re.S)
    assert block is not None
    for model, (given, taken) in tokens.items():
        assert model in block.group(0)
        assert f"{given + taken:,}" in block.group(0)
