"""A person records an intervention by hand (the runbook's policy changes, approvals and
overrides), but never in the shape of the portal's own records: a hand-written approval is a
``manual_approval``, told apart from the ``approval`` a vote in the queue writes, whatever its
body and data claim, through the API, the CLI and the timeline's form."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from ledger_portal.cli import main
from runs.models import Annotation, Run
from runs.services import AnnotationRejected, annotate_run

SYSTEM_KINDS = ("approval", "policy_change", "override", "rollback", "replay", "retention",
                "configuration", "incident_link", "run_status")
FORGED = {"approval_request": 1, "status": "approved", "action_hash": "0" * 64}


@pytest.fixture
def run(acme, record, make_run) -> dict[str, Any]:
    recorded = make_run()
    record(acme, recorded)
    recorded["recorded_seq"] = Run.objects.get(run_id=recorded["run_id"]).last_seq
    return recorded


def added(run: dict[str, Any]) -> list[Annotation]:
    return list(Annotation.objects.filter(run__run_id=run["run_id"],
                                          seq__gt=run["recorded_seq"]).order_by("seq"))


@pytest.mark.parametrize(("asked", "stored"), [("approval", "manual_approval"),
                                               ("policy_change", "manual_policy_change"),
                                               ("override", "manual_override")])
def test_the_api_records_a_reported_intervention_apart_from_the_portals_own(
        acme, alice, run, user_client, asked, stored):
    answer = user_client(alice).post(reverse("api:run-annotations", args=[run["run_id"]]), {
        "body": "Approved out of band (call with J. Doe)", "kind": asked, "data": FORGED},
        format="json")
    assert answer.status_code == 201, answer.content
    (note,) = added(run)
    assert note.annotation_kind == stored
    assert answer.json()["annotation_kind"] == stored
    assert not Annotation.objects.filter(annotation_kind__in=SYSTEM_KINDS,
                                         run__run_id=run["run_id"], author=alice).exists()


def test_the_cli_and_the_timeline_form_record_the_same(acme, alice, run, client):
    assert main(["--as", "alice", "annotate", run["run_id"], "--body", "approved by phone",
                 "--kind", "approval"]) == 0
    client.force_login(alice)
    client.post(reverse("run-annotate", args=["acme", run["run_id"]]),
                {"kind": "policy_change", "body": "Published tools v3 by hand"})
    assert [n.annotation_kind for n in added(run)] == ["manual_approval",
                                                       "manual_policy_change"]


@pytest.mark.parametrize("kind", SYSTEM_KINDS[3:])
def test_system_event_kinds_cannot_be_written_by_hand(acme, alice, run, kind):
    with pytest.raises(AnnotationRejected, match="unknown kind"):
        annotate_run(Run.objects.get(run_id=run["run_id"]), by=alice, body="x", kind=kind)
    assert added(run) == []
