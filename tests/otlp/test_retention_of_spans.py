"""Retention removes the raw spans a run was assembled from together with the run: they carry
the same content unredacted and must not outlive it."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from runs.models import OtlpEvent, OtlpSpan, OtlpTrace, Run
from runs.otlp.assembly import run_id_for
from runs.retention import apply_retention, place_legal_hold

from . import spans as s


def test_a_removed_runs_spans_and_trace_go_with_it_and_a_held_runs_stay(acme, alice, otlp_post):
    acme.retention_days = 30
    acme.save()
    old_trace, old_spans = s.agent_trace()
    held_trace, held_spans = s.agent_trace()
    for spans in (old_spans, held_spans):
        assert otlp_post(acme, s.protobuf(*spans)).status_code == 200
    for trace_id in (old_trace, held_trace):  # GenAI events whose span never came
        OtlpEvent.objects.create(tenant=acme, trace_id=trace_id, span_id=s.new_span_id(),
                                 body={"name": "gen_ai.user.message", "attributes": {
                                     "content": "card 4111 1111 1111 1111"}},
                                 received_at=timezone.now())
    place_legal_hold(acme, by=alice, reason="matter 7", run_id=run_id_for(held_trace))
    assert OtlpSpan.objects.filter(trace__trace_id=old_trace).count() == len(old_spans)

    report = apply_retention(acme, timezone.now() + timedelta(days=31))

    assert report.removed_runs == 1
    assert not Run.objects.filter(tenant=acme, run_id=run_id_for(old_trace)).exists()
    assert not OtlpTrace.objects.filter(tenant=acme, trace_id=old_trace).exists()
    assert not OtlpSpan.objects.filter(tenant=acme, trace__trace_id=old_trace).exists()
    assert OtlpSpan.objects.filter(trace__trace_id=held_trace).count() == len(held_spans)
    assert list(OtlpEvent.objects.values_list("trace_id", flat=True)) == [held_trace]
