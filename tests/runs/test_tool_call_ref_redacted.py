"""A tool call's ``tool_call_ref`` is the agent's word like the rest of the call: an agent can
put an address in it (the id character set allows ``@``), so it is redacted where it is read,
on the API and in exports, like the call's input and output."""

from __future__ import annotations

from django.urls import reverse

from runs.services import REDACTED_FIELDS


def test_the_tool_call_ref_is_redacted_on_the_api(acme, alice, record, make_run, user_client):
    run = make_run()
    run["tool_calls"][0]["tool_call_ref"] = "ada@example.com"
    record(acme, run)
    call_id = run["tool_calls"][0]["call_id"]
    client = user_client(alice)
    for url in (reverse("api:toolcall-detail", args=[call_id]),
                reverse("api:run-detail", args=[run["run_id"]])):
        answer = client.get(url)
        assert answer.status_code == 200
        assert "ada@example.com" not in answer.content.decode()


def test_every_face_that_redacts_a_tool_call_redacts_its_ref():
    assert "tool_call_ref" in REDACTED_FIELDS["tool_call"]  # API, pages, CLI and exports
