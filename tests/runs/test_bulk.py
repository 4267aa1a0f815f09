"""``runs.bulk``: ``build`` makes the instance ``Model(**values)`` makes; ``insert_all`` stores
rows of several tables, foreign keys to rows of the same call included."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runs.bulk import append_rows, build, insert_all
from runs.models import (
    Agent,
    Annotation,
    ModelCall,
    OtlpSpan,
    OtlpTrace,
    Run,
    Step,
    Tool,
    ToolCall,
)

T = datetime(2026, 11, 26, 3, 4, 5, 678901, tzinfo=UTC)


def _state(obj: Any) -> dict[str, Any]:
    values = {k: v for k, v in obj.__dict__.items() if k != "_state"}
    return {"values": values, "adding": obj._state.adding, "db": obj._state.db,
            "cache": dict(obj._state.fields_cache)}


def _same(model: type[Any], /, **values: Any) -> Any:
    built, made = build(model, **values), model(**values)
    assert type(built) is model
    assert _state(built) == _state(made)
    return built


@pytest.mark.django_db
def test_build_makes_what_init_makes(acme):
    agent = Agent.objects.create(tenant=acme, agent_id="a", name="A")
    tool = Tool.objects.create(tenant=acme, name="t", action_class="read")
    saved = _same(Run, tenant=acme, run_id="r1", agent=agent, started_at=T, metadata={"x": 1},
                  seq=0, tip_moved_at=T, head_hash="h")
    saved.save()
    unsaved = _same(Run, tenant=acme, run_id="r2", agent=agent, goal="g", started_at=T, seq=0,
                    tip_moved_at=T)
    assert unsaved._state.fields_cache["agent"] is agent
    assert unsaved.agent_id == agent.pk
    for run in (saved, unsaved):  # a record under a run stored or not yet stored
        step = _same(Step, tenant=acme, run=run, step_id="s", index=0, title="t",
                     status="succeeded", started_at=T, ended_at=None, metadata={})
        _same(ModelCall, tenant=acme, run=run, call_id="m", provider="p", model="m",
              messages=[{"role": "user"}], response=None, input_tokens=3, output_tokens=None,
              latency_ms=None, started_at=T, ended_at=T, error=None, classifications={})
        _same(ToolCall, tenant=acme, run=run, call_id="c", tool=tool, action_class="read",
              input={}, output=None, status="succeeded", error=None, attempt=1, started_at=T,
              ended_at=None, duration_ms=None, idempotency_key=None, supports_rollback=False,
              classifications={}, step=step)
        _same(Annotation, tenant=acme, run=run, annotation_id="n", annotation_kind="note",
              target_call_id="", body="b", data={"k": [1]}, author_label="me")
    trace = OtlpTrace.objects.create(tenant=acme, trace_id="ab" * 16, run_id="otel-x",
                                     first_received_at=T, last_activity_at=T)
    _same(OtlpSpan, tenant=acme, trace=trace, span_id="cd" * 8, parent_span_id="", name="n",
          state="recorded", record_kind="tool_call", body={"a": 1}, received_at=T)


@pytest.mark.django_db
def test_build_fills_callable_defaults_per_instance(acme):
    agent = Agent.objects.create(tenant=acme, agent_id="a", name="A")
    run = build(Run, tenant=acme, run_id="r", agent=agent, started_at=T, seq=0)
    notes = [build(Annotation, tenant=acme, run=run, body="b") for _ in range(2)]
    assert notes[0].annotation_id != notes[1].annotation_id
    assert notes[0].data == {}
    assert notes[0].data is not notes[1].data
    assert run.tip_moved_at is not None
    assert run.metadata == {}


@pytest.mark.django_db
def test_build_leaves_what_it_does_not_handle_to_init(acme):
    agent = Agent.objects.create(tenant=acme, agent_id="a", name="A")
    with pytest.raises(TypeError):
        build(Run, tenant=acme, no_such_field=1)
    with pytest.raises(ValueError):  # a foreign key given an instance of another model
        build(Run, tenant=acme, agent=acme)
    by_attname = build(Run, tenant=acme, agent_id=agent.pk, run_id="r", started_at=T, seq=0)
    assert by_attname.agent == agent


@pytest.mark.django_db(transaction=True)
def test_insert_all_stores_rows_pointing_at_rows_of_the_same_call(acme):
    agent = Agent.objects.create(tenant=acme, agent_id="a", name="A")
    tool = Tool.objects.create(tenant=acme, name="t", action_class="read")
    runs = [build(Run, tenant=acme, run_id=f"r{i}", agent=agent, started_at=T, seq=0,
                  head_hash="h", metadata={"i": i}) for i in range(3)]
    steps = [build(Step, tenant=acme, run=run, step_id="s", index=0, title="t", seq=1,
                   status="succeeded", started_at=T, content_hash="c", chain_hash="h")
             for run in runs]
    calls = [build(ToolCall, tenant=acme, run=step.run, step=step, call_id=f"c{i}", tool=tool,
                   action_class="read", input={"q": [i]}, status="succeeded", started_at=T,
                   seq=2, content_hash="c", chain_hash="h") for i, step in enumerate(steps)]
    retry = build(ToolCall, tenant=acme, run=runs[0], call_id="c0-retry", tool=tool,
                  action_class="read", input={}, status="succeeded", started_at=T, seq=3,
                  attempt=2, retry_of=calls[0], content_hash="c", chain_hash="h")
    insert_all([(Run, runs), (Step, steps), (ToolCall, [*calls, retry]), (ModelCall, [])])

    stored = {c.call_id: c for c in ToolCall.objects.filter(tenant=acme).select_related(
        "run", "step", "retry_of")}
    assert {c: (s.run.run_id, s.step.step_id if s.step else None, s.input)
            for c, s in stored.items()} == {
        "c0": ("r0", "s", {"q": [0]}), "c1": ("r1", "s", {"q": [1]}),
        "c2": ("r2", "s", {"q": [2]}), "c0-retry": ("r0", None, {})}
    assert stored["c0-retry"].retry_of.call_id == "c0"
    assert sorted(Run.objects.filter(tenant=acme, run_id__startswith="r").values_list(
        "metadata", flat=True),
                  key=str) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(r.recorded_at is not None for r in Run.objects.filter(tenant=acme))


@pytest.mark.django_db(transaction=True)
def test_append_rows_stores_rows_with_ids_from_the_table(acme):
    trace = OtlpTrace.objects.create(tenant=acme, trace_id="ab" * 16, run_id="otel-x",
                                     first_received_at=T, last_activity_at=T)
    before = OtlpSpan.objects.create(tenant=acme, trace=trace, span_id="00" * 7 + "01",
                                     body={}, received_at=T)
    spans = [build(OtlpSpan, tenant=acme, trace=trace, span_id=f"{i:016x}", name=f"s{i}",
                   body={"attributes": {"k": [i]}}, received_at=T) for i in range(2, 5)]
    append_rows(OtlpSpan, spans)
    stored = list(OtlpSpan.objects.filter(trace=trace).order_by("id").values_list(
        "id", "name", "body"))
    assert [name for _, name, _ in stored] == ["", "s2", "s3", "s4"]
    assert stored[0][0] == before.pk
    assert len({pk for pk, _, _ in stored}) == 4
    assert stored[3][2] == {"attributes": {"k": [4]}}
    after = OtlpSpan.objects.create(tenant=acme, trace=trace, span_id="ff" * 8, body={},
                                    received_at=T)
    assert after.pk > max(pk for pk, _, _ in stored)  # the table's own sequence moved on


def _decision(tenant: Any, **values: Any) -> Any:
    from policies.models import Decision

    fields = {"tenant": tenant, "run_id": "run-1", "call_id": "call-1", "agent_id": "bot",
              "tool": "refund", "action_class": "write", "mode": "live",
              "input": {"arguments": {"amount": 10, "note": "é \u2028 \"quoted\""},
                        "nested": [1, 2.5, None, True]},
              "effect": "allow", "reason": "rule r1", "matched_rules": [{"rule": "r1"}],
              "engine": "embedded", "engine_answers": [], "latency_us": 42,
              "decided_by": "key:bot"}
    return Decision(**{**fields, **values})


def _stored(obj: Any) -> dict[str, Any]:
    row = type(obj).objects.filter(pk=obj.pk).values().get()
    row.pop("id")
    return row


@pytest.mark.django_db
def test_insert_one_stores_the_row_save_stores(acme: Any) -> None:
    from runs.bulk import insert_one

    saved = _decision(acme)
    saved.save(force_insert=True)
    inserted = insert_one(_decision(acme))
    assert inserted.pk is not None
    assert inserted.pk != saved.pk
    assert (inserted._state.adding, inserted._state.db) == (False, "default")
    assert inserted.created_at is not None  # stamped as save stamps it
    expected, got = _stored(saved), _stored(inserted)
    assert got.pop("created_at") >= expected.pop("created_at")
    assert got == expected
    assert type(inserted).objects.get(pk=inserted.pk).input == inserted.input


@pytest.mark.django_db
def test_insert_one_sends_the_save_signals_to_whoever_listens(acme: Any) -> None:
    from django.db.models.signals import post_save, pre_save

    from policies.models import Decision
    from runs.bulk import insert_one

    heard: list[tuple[str, Any, Any]] = []

    def before(sender: Any, instance: Any, **kwargs: Any) -> None:
        heard.append(("pre", instance.pk, kwargs["raw"]))

    def after(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        heard.append(("post", instance.pk, created))

    pre_save.connect(before, sender=Decision)
    post_save.connect(after, sender=Decision)
    try:
        decision = insert_one(_decision(acme))
    finally:
        pre_save.disconnect(before, sender=Decision)
        post_save.disconnect(after, sender=Decision)
    assert heard == [("pre", None, False), ("post", decision.pk, True)]


@pytest.mark.django_db
def test_insert_one_leaves_a_row_with_its_key_set_to_save(acme: Any) -> None:
    from runs.bulk import insert_one

    first = insert_one(_decision(acme))
    chosen = _decision(acme, id=first.pk + 1000)
    assert insert_one(chosen).pk == first.pk + 1000
    assert type(chosen).objects.filter(pk=first.pk + 1000).exists()
