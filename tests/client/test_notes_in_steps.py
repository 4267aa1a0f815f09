"""A note written inside a step is accepted by the portal (it once made the step refused:
``annotations[0].step_id: Extra inputs are not permitted``)."""

from __future__ import annotations

from typing import Any

from core.models import Tenant
from runs.models import Annotation, Run, ToolCall


def test_a_note_inside_a_step_lands_with_the_step_it_was_written_in(
        make_client: Any, acme: Tenant) -> None:
    client = make_client()
    with (client.run(agent_id="support-bot", goal="note in a step") as run,
          run.step("look up") as step):
        with run.tool_call("lookup", action_class="read", input={"q": 1}):
            pass
        run.note("checked the customer", data={"ticket": "T-1"})
    assert client.flush(timeout=30)
    assert client.stats().rejected == 0
    assert Run.objects.get(run_id=run.run_id).status == "succeeded"
    assert ToolCall.objects.filter(run__run_id=run.run_id).count() == 1
    note = Annotation.objects.get(run__run_id=run.run_id, body="checked the customer")
    assert note.data == {"ticket": "T-1", "step_id": step.step_id}
