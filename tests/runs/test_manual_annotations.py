"""Recording a manual intervention on a run (the runbook: "always record manual interventions
(policy changes, approvals, overrides) as ledger annotations"): one service, behind
``POST /api/v1/runs/<run_id>/annotations/``, ``ledger annotate`` and the timeline's form.

alice operates acme; bob reads acme's ledger but may not operate; charlie is in globex.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from core.cli_support import EXIT_FORBIDDEN, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE
from core.roles import Role
from core.services import grant_role
from ledger_portal.cli import main
from runs import annotation_cli
from runs.integrity import verify_tenant
from runs.models import Annotation, Run
from runs.services import (
    ANNOTATION_BODY_MAX,
    MANUAL_ANNOTATION_KINDS,
    MANUAL_KIND_WORDS,
    AnnotationRejected,
    annotate_run,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(acme, record, make_run) -> dict[str, Any]:
    recorded = make_run()
    record(acme, recorded)
    recorded["recorded_seq"] = Run.objects.get(run_id=recorded["run_id"]).last_seq
    return recorded


@pytest.fixture
def reader(bob, acme):
    grant_role(bob, Role.VIEW_LEDGER, acme)
    return bob


def url(run_id: str) -> str:
    return reverse("api:run-annotations", args=[run_id])


def notes_on(run: dict[str, Any]) -> list[Annotation]:
    """The annotations added after the run was recorded."""
    return list(Annotation.objects.filter(run__run_id=run["run_id"],
                                          seq__gt=run["recorded_seq"]).order_by("seq"))


# -- the service --------------------------------------------------------------------------------

def test_an_annotation_is_appended_to_the_runs_chain_with_its_author(acme, alice, run):
    stored = Run.objects.get(tenant=acme, run_id=run["run_id"])
    note = annotate_run(stored, by=alice,
                        body="  Raised the refund limit for this customer (PD-12)  ",
                        kind="override", data={"ticket": "PD-12"})
    stored.refresh_from_db()
    assert (note.run_id, note.seq, stored.last_seq) == (stored.pk, stored.last_seq,
                                                        stored.last_seq)
    assert stored.head_hash == note.chain_hash
    assert (note.annotation_kind, note.body, note.data) == (
        "manual_override", "Raised the refund limit for this customer (PD-12)", {"ticket": "PD-12"})
    assert (note.author, note.author_label) == (alice, "alice")
    assert verify_tenant(acme, run_id=run["run_id"]).intact


def test_a_closed_run_can_be_annotated_and_still_verifies(acme, alice, record, make_run):
    closed = make_run()
    closed["status"], closed["ended_at"] = "succeeded", "2026-11-01T00:00:00Z"
    record(acme, closed)
    annotate_run(Run.objects.get(run_id=closed["run_id"]), by=alice, body="approved by phone",
                 kind="approval")
    assert verify_tenant(acme).intact


def test_annotating_needs_the_operate_role(acme, reader, run):
    with pytest.raises(PermissionDenied, match="operate role"):
        annotate_run(Run.objects.get(run_id=run["run_id"]), by=reader, body="looked at it")
    assert notes_on(run) == []


@pytest.mark.parametrize(("body", "kwargs", "why"), [
    ("", {}, "needs a body"),
    ("   \n ", {}, "needs a body"),
    ("x" * (ANNOTATION_BODY_MAX + 1), {}, "at most"),
    ("nul \x00 inside", {}, "NUL"),
    ("fine", {"kind": "run_status"}, "unknown kind"),
    ("fine", {"data": ["not", "an", "object"]}, "JSON object"),
    ("fine", {"data": {"blob": "x" * 30_000}}, "at most"),
    ("fine", {"target_call_id": "no-such-call"}, "no tool call"),
], ids=["empty", "blank", "too-long", "nul", "system-kind", "data-list", "data-too-big",
        "unknown-call"])
def test_bad_input_is_refused_and_nothing_is_written(acme, alice, run, body, kwargs, why):
    stored = Run.objects.get(run_id=run["run_id"])
    head = stored.head_hash
    with pytest.raises(AnnotationRejected, match=why):
        annotate_run(stored, by=alice, body=body, **kwargs)
    stored.refresh_from_db()
    assert (notes_on(run), stored.head_hash) == ([], head)


def test_an_annotation_may_point_at_a_call_of_the_run(acme, alice, run):
    call_id = run["tool_calls"][0]["call_id"]
    note = annotate_run(Run.objects.get(run_id=run["run_id"]), by=alice, body="retried by hand",
                        target_call_id=call_id)
    assert note.target_call_id == call_id


# -- the API ------------------------------------------------------------------------------------

def test_the_api_records_an_annotation_and_returns_it(acme, alice, run, user_client):
    response = user_client(alice).post(url(run["run_id"]), {
        "body": "Approved a live replay out of band (call with J. Doe)", "kind": "approval",
        "data": {"ticket": "PD-12"}}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    [note] = notes_on(run)
    assert body["annotation_id"] == note.annotation_id
    assert (body["kind"], body["annotation_kind"], body["author_label"], body["run_id"],
            body["tenant"], body["seq"]) == ("annotation", "manual_approval", "alice",
                                             run["run_id"],
                                             "acme", note.seq)
    assert body["data"] == {"ticket": "PD-12"}
    timeline = user_client(alice).get(reverse("api:run-detail", args=[run["run_id"]])).json()
    assert timeline["timeline"][-1]["annotation_id"] == note.annotation_id


def test_an_api_key_with_the_operate_scope_annotates_under_its_name(acme, run, key_client):
    response = key_client(acme, ["operate", "view_ledger"]).post(
        url(run["run_id"]), {"body": "paused the agent"}, format="json")
    assert response.status_code == 201, response.content
    [note] = notes_on(run)
    assert note.author is None
    assert note.author_label == "apikey:acme/agent"


@pytest.mark.parametrize("payload", [
    {}, {"body": ""}, {"body": "   "}, {"body": "x" * (ANNOTATION_BODY_MAX + 1)},
    {"body": "ok", "data": "not an object"}, {"body": "ok", "kind": "retention"},
], ids=["missing", "empty", "blank", "too-long", "data-string", "system-kind"])
def test_the_api_refuses_bad_input_with_400_and_writes_nothing(acme, alice, run, user_client,
                                                               payload):
    response = user_client(alice).post(url(run["run_id"]), payload, format="json")
    assert response.status_code == 400, response.content
    assert notes_on(run) == []


def test_an_unknown_run_is_404(acme, alice, run, user_client):
    response = user_client(alice).post(url("no-such-run"), {"body": "x"}, format="json")
    assert response.status_code == 404


def test_a_reader_without_operate_gets_403(acme, reader, run, user_client):
    response = user_client(reader).post(url(run["run_id"]), {"body": "x"}, format="json")
    assert response.status_code == 403
    assert "operate role" in response.json()["detail"]
    assert notes_on(run) == []


def test_nobody_annotates_another_tenants_run(acme, charlie, globex, run, user_client,
                                              key_client):
    for client in (user_client(charlie), key_client(globex, ["operate", "view_ledger"])):
        response = client.post(url(run["run_id"]), {"body": "x"}, format="json")
        assert response.status_code == 404
        response = client.post(url(run["run_id"]) + "?tenant=acme", {"body": "x"},
                               format="json")
        assert response.status_code == 404
    assert notes_on(run) == []


# -- ledger annotate ----------------------------------------------------------------------------

def test_ledger_annotate_records_an_annotation(acme, alice, run, capsys):
    code = main(["--as", "alice", "annotate", run["run_id"], "--tenant", "acme", "--body",
                 "Disabled the refund tool for the night", "--kind", "override", "--data",
                 '{"ticket": "PD-12"}', "--json"])
    assert code == EXIT_OK
    printed = orjson.loads(capsys.readouterr().out)
    [note] = notes_on(run)
    assert (printed["annotation_id"], printed["annotation_kind"]) == (
        note.annotation_id, "manual_override")
    assert printed["author_label"].startswith("alice via local mode (")  # run as on the host
    assert note.data == {"ticket": "PD-12"}


@pytest.mark.parametrize(("args", "code", "says"), [
    (["--body", ""], EXIT_USAGE, "needs a body"),
    (["--body", "ok", "--data", "{not json"], EXIT_USAGE, "not JSON"),
    (["--body", "ok", "--data", "[1, 2]"], EXIT_USAGE, "JSON object"),
], ids=["empty-body", "bad-json", "data-list"])
def test_ledger_annotate_refuses_bad_input_with_exit_2(acme, alice, run, capsys, args, code,
                                                       says):
    assert main(["--as", "alice", "annotate", run["run_id"], *args]) == code
    assert says in capsys.readouterr().err
    assert notes_on(run) == []


def test_ledger_annotate_an_unknown_or_foreign_run_exits_1(acme, alice, charlie, run, capsys):
    assert main(["--as", "alice", "annotate", "no-such-run", "--body", "x"]) == EXIT_NOT_FOUND
    assert main(["--as", "charlie", "annotate", run["run_id"], "--body", "x"]) == EXIT_NOT_FOUND
    assert "no run" in capsys.readouterr().err
    assert notes_on(run) == []


def test_ledger_annotate_without_operate_exits_3(acme, reader, run, capsys):
    assert main(["--as", "bob", "annotate", run["run_id"], "--body", "x"]) == EXIT_FORBIDDEN
    assert "operate role" in capsys.readouterr().err


def test_the_cli_offers_exactly_the_manual_kinds():
    assert tuple(str(k) for k in MANUAL_ANNOTATION_KINDS) == annotation_cli.KINDS
    assert tuple(MANUAL_KIND_WORDS) == annotation_cli.KIND_WORDS


# -- the timeline page --------------------------------------------------------------------------

def test_the_timeline_offers_the_form_to_operators_only(acme, alice, reader, run, client):
    page = reverse("run-timeline", args=["acme", run["run_id"]])
    client.force_login(alice)
    assert 'id="annotate-form"' in client.get(page).content.decode()
    client.force_login(reader)
    assert 'id="annotate-form"' not in client.get(page).content.decode()


def test_the_timeline_form_records_an_annotation(acme, alice, run, client):
    client.force_login(alice)
    response = client.post(reverse("run-annotate", args=["acme", run["run_id"]]),
                           {"kind": "policy_change", "body": "Published tools v3 by hand"},
                           follow=True)
    assert response.status_code == 200
    [note] = notes_on(run)
    assert (note.annotation_kind, note.author) == ("manual_policy_change", alice)
    assert "Published tools v3 by hand" in response.content.decode()


def test_the_timeline_form_says_why_nothing_was_recorded(acme, alice, reader, run, client):
    target = reverse("run-annotate", args=["acme", run["run_id"]])
    client.force_login(alice)
    response = client.post(target, {"body": "  "}, follow=True)
    assert "Nothing was recorded" in response.content.decode()
    client.force_login(reader)
    response = client.post(target, {"body": "x"}, follow=True)
    assert "operate role" in response.content.decode()
    assert notes_on(run) == []


def test_the_timeline_form_is_404_for_another_tenant(acme, charlie, run, client):
    client.force_login(charlie)
    response = client.post(reverse("run-annotate", args=["acme", run["run_id"]]),
                           {"body": "x"})
    assert response.status_code == 404
    assert notes_on(run) == []


def test_an_agent_cannot_write_into_or_close_the_governance_log(acme, alice, key_client,
                                                                 make_run):
    from runs.annotations import annotate

    annotate(acme, "note", "the log exists", by=alice)
    agent = key_client(acme, ["ingest"])
    forged = make_run()
    forged.update(run_id="governance", status="succeeded")
    response = agent.post("/api/v1/batches/", {"runs": [forged]}, format="json")
    assert response.status_code == 400
    assert "runs[0].run_id" in response.content.decode()
    posing = make_run()
    posing["agent_id"] = "ledger-portal"
    assert agent.post("/api/v1/batches/", {"runs": [posing]},
                      format="json").status_code == 400
    log = Run.objects.get(tenant=acme, run_id="governance")
    assert log.status == "running"
    assert log.last_seq == 1
