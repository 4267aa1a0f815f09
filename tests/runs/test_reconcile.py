"""The reconciliation queue: after a mapping update, ``ledger reconcile --apply`` records what
now maps as new chained records, exactly once, noted on the run; what still does not map stays
pending; an operator may dismiss an item with a justification. Every face sees only its
reader's tenants."""

from __future__ import annotations

import json
import threading

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection

from core.cli_support import EXIT_FORBIDDEN, EXIT_OK
from ledger_portal.cli import main
from runs.deferred import apply_deferred, dismiss_deferred, keep_deferred
from runs.deferred_batch import DeferredIn, content_key
from runs.integrity import verify_tenant
from runs.models import Annotation, DeferredItem, Run, ToolCall

pytestmark = pytest.mark.django_db


def deferred_by_an_older_release(tenant, run, call, code="unknown_value", **detail):
    """What a portal that did not know a value (or a field) of ``call`` kept back from ``run``:
    the current release knows it, which is what a mapping update means."""
    payload = {"kind": "tool_calls", "path": "runs[0].tool_calls[0]", "run_id": run["run_id"],
               "agent_id": run["agent_id"], "record": call, **detail}
    keep_deferred(tenant, [DeferredIn("batch", code, "an older portal did not know it",
                                      payload, run["run_id"],
                                      content_key("test", code, call))], "agent")
    return DeferredItem.objects.latest("id")


@pytest.fixture
def recorded(acme, record, make_run):
    """A closed run of acme whose last tool call an older portal deferred whole."""
    run = make_run()
    held_back = run["tool_calls"].pop()
    held_back["retry_of"], held_back["attempt"] = None, 1
    record(acme, run)
    return run, held_back


def test_apply_records_what_now_maps_once_and_notes_it_on_the_run(acme, alice, recorded,
                                                                  capsys):
    run, call = recorded
    item = deferred_by_an_older_release(acme, run, call, fields=["action_class"])
    stored = Run.objects.get(run_id=run["run_id"])
    assert stored.status != "running"  # the run closed before the item was applied

    assert main(["--as", "alice", "reconcile", "--apply", "--tenant", "acme"]) == EXIT_OK
    assert "applied 1," in capsys.readouterr().out
    assert main(["--as", "alice", "reconcile", "--apply", "--tenant", "acme"]) == EXIT_OK
    assert "applied 0," in capsys.readouterr().out

    landed = ToolCall.objects.get(tenant=acme, call_id=call["call_id"])
    assert landed.input == call["input"]
    assert landed.seq > Run.objects.get(pk=stored.pk).last_seq - 2  # appended, chained
    item.refresh_from_db()
    assert (item.status, item.resolved_by) == ("applied", alice)
    assert {"kind": "tool_call", "id": call["call_id"]} in item.applied_records
    note = Annotation.objects.get(tenant=acme, annotation_id=f"deferred-{item.pk}-applied")
    assert "Deferred pending ledger schema reconciliation" in note.body
    assert note.data["deferred_item"] == item.pk
    assert verify_tenant(acme).intact


def test_fields_a_newer_release_knows_become_a_correction_naming_the_record(acme, alice,
                                                                           recorded):
    run, _ = recorded
    call = run["tool_calls"][0]
    item = deferred_by_an_older_release(
        acme, run, {**call, "tool_call_ref": "call_abc"}, code="unknown_field",
        unknown={"tool_call_ref": "call_abc"})

    outcome = apply_deferred(item, by=alice)

    assert outcome.outcome == "applied", outcome.detail
    note = Annotation.objects.get(annotation_id=f"deferred-{item.pk}-applied")
    assert (note.annotation_kind, note.target_call_id) == ("correction", call["call_id"])
    assert note.data["fields"] == {"tool_call_ref": "call_abc"}


def test_what_still_does_not_map_stays_pending_and_nothing_is_written(acme, alice, key_client,
                                                                      make_run):
    acme.batch_unknown_fields = "lenient"
    acme.save()
    run = make_run()
    run["tool_calls"][0]["action_class"] = "impersonate"
    assert key_client(acme).post("/api/v1/batches/", {"runs": [run]},
                                 format="json").status_code == 201
    item = DeferredItem.objects.get()
    before = Annotation.objects.count(), ToolCall.objects.count()

    outcome = apply_deferred(item, by=alice)

    assert outcome.outcome == "still_deferred"
    item.refresh_from_db()
    assert (item.status, item.resolved_at) == ("pending", None)
    assert (Annotation.objects.count(), ToolCall.objects.count()) == before


def test_dismissing_needs_the_operate_role_and_a_justification(acme, alice, bob, recorded):
    run, call = recorded
    item = deferred_by_an_older_release(acme, run, call)
    with pytest.raises(PermissionDenied):
        dismiss_deferred(item, by=bob, justification="not mine to say")
    with pytest.raises(ValidationError):
        dismiss_deferred(item, by=alice, justification="  ")

    dismiss_deferred(item, by=alice, justification="a test agent's experiment, PD-12")

    item.refresh_from_db()
    assert (item.status, item.resolved_by, item.justification) == (
        "dismissed", alice, "a test agent's experiment, PD-12")
    note = Annotation.objects.filter(run__run_id=run["run_id"]).latest("seq")
    assert "PD-12" in note.body
    assert note.author_label == "alice"
    assert apply_deferred(item, by=alice).outcome == "taken"


def test_the_cli_dismisses_with_a_justification_and_refuses_without_the_role(
        acme, alice, bob, recorded, capsys):
    run, call = recorded
    item = deferred_by_an_older_release(acme, run, call)
    assert main(["--as", "bob", "reconcile", "--dismiss", str(item.pk), "-j",
                 "x"]) != EXIT_OK  # bob only ingests: he does not see the item
    assert main(["--as", "bob", "reconcile", "--apply"]) == EXIT_FORBIDDEN
    assert main(["--as", "alice", "reconcile", "--dismiss", str(item.pk), "-j",
                 "known noise"]) == EXIT_OK
    capsys.readouterr()
    assert main(["--as", "alice", "reconcile", "--status", "dismissed", "--json"]) == EXIT_OK
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == [item.pk]


def test_another_tenants_operator_sees_and_resolves_none_of_them(acme, alice, charlie,
                                                                 recorded, capsys, client):
    run, call = recorded
    item = deferred_by_an_older_release(acme, run, call)

    assert main(["--as", "charlie", "reconcile", "--list", "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []
    assert main(["--as", "charlie", "reconcile", "--apply"]) == EXIT_OK
    assert main(["--as", "charlie", "reconcile", "--dismiss", str(item.pk), "-j", "x"]) != 0
    client.force_login(charlie)
    for url in (f"/api/v1/deferred/{item.pk}/dismiss/", f"/api/v1/deferred/{item.pk}/apply/"):
        assert client.post(url, {"justification": "not mine"},
                           content_type="application/json").status_code == 404
    assert client.get("/api/v1/deferred/").json()["results"] == []
    item.refresh_from_db()
    assert item.status == "pending"
    assert not ToolCall.objects.filter(call_id=call["call_id"]).exists()


def test_the_api_lists_filters_and_resolves_for_an_operator(acme, alice, recorded, client):
    run, call = recorded
    item = deferred_by_an_older_release(acme, run, call)
    client.force_login(alice)
    listed = client.get("/api/v1/deferred/", {"status": "pending", "source": "batch",
                                              "tenant": "acme"}).json()["results"]
    assert [(i["id"], i["run_id"], i["tenant"]) for i in listed] == [
        (item.pk, run["run_id"], "acme")]
    assert client.get("/api/v1/deferred/", {"status": "applied"}).json()["results"] == []
    applied = client.post(f"/api/v1/deferred/{item.pk}/apply/").json()
    assert applied["outcome"] == "applied"
    again = client.post(f"/api/v1/deferred/{item.pk}/apply/").json()
    assert again["outcome"] == "taken"
    assert ToolCall.objects.filter(call_id=call["call_id"]).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_reconcilers_at_once_apply_an_item_once(acme, alice, recorded):
    run, call = recorded
    item = deferred_by_an_older_release(acme, run, call)
    outcomes, errors = [], []
    barrier = threading.Barrier(2)

    def reconcile() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(apply_deferred(item, by=alice).outcome)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=reconcile) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert sorted(outcomes) == ["applied", "taken"]
    assert ToolCall.objects.filter(call_id=call["call_id"]).count() == 1
    assert Annotation.objects.filter(annotation_id=f"deferred-{item.pk}-applied").count() == 1


def test_the_admin_queue_applies_and_dismisses_with_a_justification(acme, alice, charlie,
                                                                    recorded, client):
    run, call = recorded
    applied = deferred_by_an_older_release(acme, run, call)
    other = dict(call, call_id=f"{call['call_id']}-other")
    dismissed = deferred_by_an_older_release(acme, run, other)
    url = "/admin/runs/deferreditem/"

    client.force_login(charlie)
    listing = client.get(url, {"status__exact": "pending"})
    assert listing.status_code == 200
    assert list(listing.context["cl"].result_list) == []
    client.post(url, {"action": "apply_selected", "_selected_action": [applied.pk]})
    assert DeferredItem.objects.get(pk=applied.pk).status == "pending"

    client.force_login(alice)
    listing = client.get(url, {"status__exact": "pending", "source__exact": "batch"})
    assert {i.pk for i in listing.context["cl"].result_list} == {applied.pk, dismissed.pk}
    assert client.get(f"{url}{applied.pk}/change/").status_code == 200
    client.post(url, {"action": "apply_selected", "_selected_action": [applied.pk]})
    client.post(url, {"action": "dismiss_selected", "_selected_action": [dismissed.pk],
                      "justification": ""})
    assert DeferredItem.objects.get(pk=dismissed.pk).status == "pending"  # needs a reason
    client.post(url, {"action": "dismiss_selected", "_selected_action": [dismissed.pk],
                      "justification": "sent by a canary, PD-40"})
    assert DeferredItem.objects.get(pk=applied.pk).status == "applied"
    assert DeferredItem.objects.get(pk=dismissed.pk).justification == "sent by a canary, PD-40"
    assert ToolCall.objects.filter(call_id=call["call_id"]).count() == 1
