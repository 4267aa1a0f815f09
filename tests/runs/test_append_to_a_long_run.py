"""An agent that records as it goes appends small batches to one run for its whole life. Each
append reads what it names of the stored run, not the run: loading every stored step to
resolve a batch's step references made an append to a 10,000-step run take 457 ms, and an
agent's life quadratic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runs.ingest_schema import parse_batch
from runs.models import Step, ToolCall
from runs.services import ingest_batch

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 12, 1, tzinfo=UTC)
RUN = {"run_id": "agent-life", "agent_id": "agent-1", "goal": "keep going",
       "started_at": T0.isoformat(), "status": "running"}


def _step(k: int) -> dict[str, Any]:
    return {"step_id": f"s{k}", "index": k, "title": f"step {k}", "status": "succeeded",
            "started_at": (T0 + timedelta(seconds=k)).isoformat()}


def _call(k: int, step: int, **extra: Any) -> dict[str, Any]:
    return {"call_id": f"c{k}", "step_id": f"s{step}", "tool": "search", "action_class": "read",
            "input": {"q": k}, "output": {"hits": k}, "status": "succeeded",
            "started_at": (T0 + timedelta(seconds=k)).isoformat(), **extra}


def _append(tenant: Any, steps: list[dict[str, Any]], calls: list[dict[str, Any]]) -> Any:
    return ingest_batch(tenant, parse_batch({"runs": [{**RUN, "steps": steps, "model_calls": [],
                                                       "tool_calls": calls}]}),
                        recorded_by="test")


@pytest.fixture
def steps_loaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The step ids ingestion reads back from the database, in order."""
    loaded: list[str] = []
    real = Step.from_db.__func__  # type: ignore[attr-defined]

    def from_db(cls: type[Step], db: str, field_names: Any, values: Any) -> Step:
        step = real(cls, db, field_names, values)
        loaded.append(step.step_id)
        return step
    monkeypatch.setattr(Step, "from_db", classmethod(from_db))
    return loaded


def test_an_append_reads_only_the_stored_steps_it_names(acme, steps_loaded):
    _append(acme, [_step(k) for k in range(300)], [])
    steps_loaded.clear()
    # a new step, a call in it, a call in an old step, and an old step sent again
    result = _append(acme, [_step(300), _step(7)], [_call(1, 300), _call(2, 5)])
    assert sorted(steps_loaded) == ["s5", "s7"]
    assert (result.created["steps"], result.unchanged["steps"]) == (1, 1)
    calls = {c.call_id: c.step.step_id for c in ToolCall.objects.select_related("step")}
    assert calls == {"c1": "s300", "c2": "s5"}


def test_a_call_in_a_step_the_run_never_had_is_still_refused(acme, steps_loaded):
    from runs.ingest import BatchRejected

    _append(acme, [_step(k) for k in range(3)], [])
    with pytest.raises(BatchRejected, match="s9"):
        _append(acme, [], [_call(1, 9)])
    assert not ToolCall.objects.exists()


def test_a_step_sent_again_with_other_content_is_a_conflict(acme, steps_loaded):
    from runs.ingest import BatchConflict

    _append(acme, [_step(k) for k in range(3)], [])
    with pytest.raises(BatchConflict, match="title"):
        _append(acme, [{**_step(1), "title": "rewritten"}], [])
