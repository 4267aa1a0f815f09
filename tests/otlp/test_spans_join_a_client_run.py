"""A run recorded under a trace's run id by another writer (the agent client following the
trace context) is joined by the trace's spans as they come; that writer ends it, not the
spans. Once it has ended, later spans are kept raw and noted, never lost."""

from __future__ import annotations

from typing import Any

import pytest

from runs.integrity import verify_tenant
from runs.models import Annotation, ModelCall, OtlpSpan, Run
from runs.otlp.assembly import run_id_for
from runs.otlp.services import assemble_idle_traces

from . import spans as s

pytestmark = pytest.mark.django_db


def _client_run(trace_id: str, **end: Any) -> dict[str, Any]:
    return {"run_id": run_id_for(trace_id), "agent_id": "weather-agent",
            "started_at": "2026-09-21T00:00:00+00:00", "metadata": {"trace_id": trace_id},
            **end}


def test_spans_join_an_open_client_run_and_leave_its_end_to_the_client(acme, otlp_post,
                                                                     record):
    trace_id, (chat, weather, _email, root) = s.agent_trace()
    record(acme, _client_run(trace_id))

    assert otlp_post(acme, s.protobuf(chat)).status_code == 200  # no root yet: joins at once
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert ModelCall.objects.filter(run=run).count() == 1
    assert otlp_post(acme, s.protobuf(weather, root)).status_code == 200

    run.refresh_from_db()
    assert run.status == "running"  # the client ends it
    assert run.agent.agent_id == "weather-agent"
    assert not OtlpSpan.objects.filter(trace__trace_id=trace_id, state="pending").exists()
    record(acme, _client_run(trace_id, status="succeeded",
                             ended_at="2026-09-21T00:00:05+00:00"))
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_spans_after_the_client_ended_its_run_are_kept_raw_and_noted(acme, otlp_post, record):
    trace_id, spans = s.agent_trace()
    record(acme, _client_run(trace_id, status="succeeded",
                             ended_at="2026-09-21T00:00:05+00:00"))

    assert otlp_post(acme, s.protobuf(*spans)).status_code == 200

    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert not ModelCall.objects.filter(run=run).exists()
    assert set(OtlpSpan.objects.filter(trace__trace_id=trace_id).values_list(
        "state", flat=True)) == {"late"}
    note = Annotation.objects.get(run=run, body__contains="arrived after this run closed")
    assert len(note.data["late_spans"]) == 4


def test_a_quiet_trace_joins_the_client_run_instead_of_conflicting(acme, otlp_post, record,
                                                                   settings):
    settings.LEDGER_OTLP_QUIET_SECONDS = 0
    trace_id, (chat, *_rest) = s.agent_trace()
    otlp_post(acme, s.protobuf(chat))  # before the client's run exists: pending
    record(acme, _client_run(trace_id))

    assert assemble_idle_traces() == {"recorded": 1, "closed": 0}
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert ModelCall.objects.filter(run=run).count() == 1
    assert assemble_idle_traces() == {"recorded": 0, "closed": 1}
    run.refresh_from_db()
    assert run.status == "running"  # closing the trace is not ending the client's run
