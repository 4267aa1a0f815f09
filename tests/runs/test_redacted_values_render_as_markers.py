"""A redacted value renders as its marker text (``[redacted:secret]``) on every text face: the
CLI's table, the timeline, replay and divergence pages; never as a Python dict, never a crash,
and the timeline does not give away the byte size of what it hides."""

from __future__ import annotations

import pytest
from django.urls import reverse

from core.cli_support import EXIT_OK
from ledger_portal.cli import main

SECRET = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
RUN_ID = "marker-run"


@pytest.fixture
def run_with_secret_title(acme, record):
    run = {"run_id": RUN_ID, "agent_id": "marker-agent", "goal": f"use {SECRET}",
           "status": "running", "started_at": "2026-10-01T08:59:00Z",
           "steps": [{"step_id": "s1", "index": 1, "title": f"call with {SECRET}",
                      "status": "done", "started_at": "2026-10-01T09:00:00Z"}],
           "tool_calls": [{"call_id": "marker-t1", "step_id": "s1", "tool": "http",
                           "action_class": "read", "input": {"token": SECRET},
                           "output": {"ok": True}, "status": "succeeded",
                           "started_at": "2026-10-01T09:00:01Z"}]}
    record(acme, run)
    return run


def test_text_ledger_show_prints_a_redacted_step_title_as_its_marker(run_with_secret_title,
                                                                     alice, capsys):
    assert main(["--as", "alice", "show", RUN_ID]) == EXIT_OK
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "[redacted:secret]" in out
    assert "'redacted'" not in out
    assert '"redacted"' not in out


def test_the_timeline_prints_markers_as_text_and_no_byte_size(run_with_secret_title, alice,
                                                              client):
    client.force_login(alice)
    page = client.get(reverse("run-timeline", args=["acme", RUN_ID])).content.decode()
    assert SECRET not in page
    assert "[redacted:secret]" in page
    assert "{&#x27;redacted&#x27;" not in page
    assert "&#x27;reason&#x27;" not in page
    assert "<summary>input</summary>" in page  # the redacted input: no size
    assert "output (11 bytes)" in page  # a payload that hides nothing keeps its size
