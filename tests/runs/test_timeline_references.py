"""A run's timeline names the step of each call and the call a retry retries by their ids,
read from the run's own rows (no join per row: on PostgreSQL that probed every month's
partition); a page of the timeline names them too when they are on an earlier page."""

from __future__ import annotations

from runs.api.presenters import timeline_of
from runs.models import Run, ToolCall


def test_every_page_names_the_steps_and_retried_calls_of_earlier_pages(acme, make_run, record):
    run_in = make_run()
    calls = run_in["tool_calls"]
    calls[-1]["retry_of"] = calls[0]["call_id"]  # a retry of the run's first call
    calls[-1]["attempt"] = 2
    record(acme, run_in)
    run = Run.objects.get(tenant=acme, run_id=run_in["run_id"])
    whole = timeline_of(run.pk, acme.pk)
    paged: list[dict] = []
    after = 0
    while page := timeline_of(run.pk, acme.pk, after, 3):
        paged += page
        after = page[-1]["seq"]
    assert paged == whole
    by_call = {row["call_id"]: row for row in whole if row["kind"] == "tool_call"}
    stored = ToolCall.objects.filter(run=run).select_related("step", "retry_of")
    assert {c.call_id: (c.step.step_id if c.step else None,
                        c.retry_of.call_id if c.retry_of else None) for c in stored} == {
        call_id: (row["step_id"], row["retry_of"]) for call_id, row in by_call.items()}
    assert by_call[calls[-1]["call_id"]]["retry_of"] == calls[0]["call_id"]
    assert any(row["step_id"] for row in whole if row["kind"] == "model_call")
