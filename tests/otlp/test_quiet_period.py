"""Traces without their root: recorded after a quiet period, appended to, closed; spans after
the close are kept raw and reported."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from runs.integrity import verify_tenant
from runs.models import Annotation, ModelCall, OtlpSpan, OtlpTrace, Run, ToolCall
from runs.otlp.assembly import run_id_for
from runs.otlp.services import assemble_idle_traces
from runs.tasks import assemble_idle_otel_traces

from . import spans as s
from .conftest import export_response

pytestmark = pytest.mark.django_db


def later(settings, seconds: int = 1):
    return timezone.now() + timedelta(seconds=settings.LEDGER_OTLP_QUIET_SECONDS + seconds)


def test_a_trace_moves_from_quiet_to_running_to_closed_and_keeps_late_spans(acme, otlp_post,
                                                                            settings):
    settings.LEDGER_OTLP_QUIET_SECONDS = 30
    trace_id, (chat, weather, email, root) = s.agent_trace()
    otlp_post(acme, s.protobuf(chat))

    assert assemble_idle_traces() == {"recorded": 0, "closed": 0}  # not quiet long enough
    assert assemble_idle_traces(now=later(settings)) == {"recorded": 1, "closed": 0}
    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.status == "running"
    assert run.agent.agent_id == "otel:weather-app"  # the agent span has not come yet
    assert ModelCall.objects.filter(run=run).count() == 1

    otlp_post(acme, s.protobuf(weather))  # appends to the running run
    assert ToolCall.objects.filter(run=run).count() == 1
    otlp_post(acme, s.protobuf(email, root))  # the root closes it
    run.refresh_from_db()
    assert run.status == "succeeded"
    assert ToolCall.objects.filter(run=run).count() == 2
    assert OtlpTrace.objects.get(tenant=acme, trace_id=trace_id).state == "closed"

    straggler = s.span(trace_id, "execute_tool get_weather", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "get_weather"},
        parent=s.sid(root), start_ms=600, end_ms=950)
    answer = export_response(otlp_post(acme, s.protobuf(straggler)))

    assert answer.partial_success.rejected_spans == 0
    assert "arrived after run" in answer.partial_success.error_message
    assert OtlpSpan.objects.get(span_id=s.sid(straggler)).state == "late"
    assert ToolCall.objects.filter(run=run).count() == 2
    note = Annotation.objects.filter(run=run).order_by("-seq")[0]
    assert note.data["late_spans"][0]["span_id"] == s.sid(straggler)
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_an_open_run_that_stays_quiet_is_closed_by_the_beat_task(acme, otlp_post, settings):
    settings.LEDGER_OTLP_QUIET_SECONDS = 0
    trace_id, (chat, weather, _email, _root) = s.agent_trace()
    otlp_post(acme, s.protobuf(chat, weather))

    assert assemble_idle_otel_traces() == {"recorded": 1, "closed": 0}
    assert assemble_idle_otel_traces() == {"recorded": 0, "closed": 1}

    run = Run.objects.get(tenant=acme, run_id=run_id_for(trace_id))
    assert run.status == "cancelled"  # neither its agent span nor its root ever came
    assert run.ended_at is not None
    *_, close_note, status_note = Annotation.objects.filter(run=run).order_by("seq")
    assert "root span never arrived" in close_note.body
    assert status_note.data["status"] == "cancelled"
    assert verify_tenant(acme, run_id=run.run_id).intact


def test_a_quiet_trace_without_genai_spans_is_closed_without_a_run(acme, otlp_post, settings):
    settings.LEDGER_OTLP_QUIET_SECONDS = 0
    trace_id = s.new_trace_id()
    otlp_post(acme, s.protobuf(s.span(trace_id, "SELECT users", {"db.system": "postgresql"},
                                      parent=s.new_span_id())))

    assert assemble_idle_traces() == {"recorded": 0, "closed": 1}
    assert not Run.objects.exists()
    assert OtlpSpan.objects.get(trace__trace_id=trace_id).state == "unmapped"


def test_the_beat_schedule_runs_the_quiet_period_task(settings):
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert "runs.assemble_idle_otel_traces" in tasks
