"""Strict redaction leaves none of the planted secrets and personal data in pages, API
responses or CLI output (the planted corpus of tests/runs/redaction_corpus.py)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.cli_support import EXIT_OK
from ledger_portal.cli import main

from .redaction_corpus import PLANTED, SECRETS, planted_model_calls, planted_tool_calls

RUN_ID = "leak-run"


@pytest.fixture
def leaky_run(acme, record):
    calls = len(SECRETS) // 3 + 1
    run = {"run_id": RUN_ID, "agent_id": "leaky-agent", "goal": "Reproduce the leak",
           "status": "running", "started_at": "2026-10-01T08:59:00Z",
           "tool_calls": planted_tool_calls(calls, RUN_ID),
           "model_calls": planted_model_calls(calls, RUN_ID)}
    record(acme, run)
    return run


def leaked(text: str) -> list[str]:
    return [value for value in PLANTED if value in text]


def test_the_corpus_is_planted_and_visible_without_redaction(leaky_run, key_client, acme, alice,
                                                             user_client):
    assert len(PLANTED) >= 200
    body = user_client(alice).get(reverse("api:run-detail", args=[RUN_ID]),
                                  {"redaction": "none"}).content.decode()
    assert len(leaked(body)) == len(set(PLANTED))  # the test can see a leak when there is one


def test_strict_api_responses_leak_nothing(leaky_run, key_client, acme):
    reader = key_client(acme, ["view_ledger"])
    detail = reader.get(reverse("api:run-detail", args=[RUN_ID])).content.decode()
    listing = reader.get(reverse("api:toolcall-list"), {"page_size": 500}).content.decode()
    one = reader.get(reverse("api:toolcall-detail", args=[f"{RUN_ID}-t1"])).content.decode()
    assert leaked(detail) == []
    assert leaked(listing) == []
    assert leaked(one) == []
    assert '"redacted":"secret"' in detail


def test_the_strict_timeline_page_leaks_nothing(leaky_run, alice, client):
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", RUN_ID])).content.decode()
    assert leaked(page) == []
    assert 'class="redacted" data-label="secret"' in page


def test_strict_cli_output_leaks_nothing(leaky_run, alice, capsys):
    assert main(["--as", "alice", "show", RUN_ID, "--json"]) == EXIT_OK
    assert leaked(capsys.readouterr().out) == []
    assert main(["--as", "alice", "show", RUN_ID, "--full"]) == EXIT_OK
    assert leaked(capsys.readouterr().out) == []
