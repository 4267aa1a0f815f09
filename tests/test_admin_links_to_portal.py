"""Every admin list whose rows have a portal page links to it: a run to its timeline, a call
(tool or model), a decision and a rollback to their row on the run's timeline, a replay to its
page, an incident to its page, a pending approval request to its card in the queue."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from approvals.services import request_approval
from incidents.services import open_incident
from operations.models import Replay, Rollback
from policies.services import ProposedCall, decide_tool_call
from runs.models import ModelCall, Run, ToolCall

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(acme, alice, record, make_run) -> dict[str, Any]:
    run = make_run()
    record(acme, run)
    stored = Run.objects.get(run_id=run["run_id"])
    call = ToolCall.objects.filter(run=stored)[0]
    model_call = ModelCall.objects.filter(run=stored)[0]
    decide_tool_call(acme, ProposedCall(tool=call.tool.name, action_class="read", arguments={},
                                        run_id=stored.run_id, call_id=call.call_id))
    Rollback.objects.create(tenant=acme, tool_call=call, run=stored, idempotency_key="k")
    replay = Replay.objects.create(tenant=acme, run=stored, requested_by_label="alice")
    incident = open_incident(acme, "refunds twice", by=alice)
    approval = request_approval(acme, tool="send_email", action_class="exfil", arguments={},
                                run_id=stored.run_id)
    timeline = reverse("run-timeline", args=["acme", stored.run_id])
    return {
        "runs_run": timeline,
        "runs_toolcall": f"{timeline}#tool_call-{call.call_id}",
        "runs_modelcall": f"{timeline}#model_call-{model_call.call_id}",
        "policies_decision": f"{timeline}#tool_call-{call.call_id}",
        "operations_rollback": f"{timeline}#tool_call-{call.call_id}",
        "operations_replay": reverse("replay-detail", args=["acme", replay.pk]),
        "incidents_incident": reverse("incident-page", args=["acme", incident.pk]),
        "approvals_approvalrequest": f"{reverse('approval-queue')}#request-{approval.pk}",
    }


def test_each_admin_list_links_its_rows_to_their_portal_page(world, alice, client):
    client.force_login(alice)
    missing = {}
    for name, link in world.items():
        page = client.get(reverse(f"admin:{name}_changelist")).content.decode()
        if f'href="{link}"' not in page:
            missing[name] = link
    assert missing == {}
