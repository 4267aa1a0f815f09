"""Retention removes closed runs past the tenant's period, unless something holds them, and
leaves a signed removal record so the ledger still verifies; a run that vanishes without one
is reported missing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.cli_support import EXIT_OK
from ledger_portal.cli import main
from runs.integrity import seal_tenant_digest, verify_tenant
from runs.models import Annotation, LegalHold, RemovalRecord, Run, ToolCall
from runs.retention import apply_retention, place_legal_hold, release_legal_hold

LATER = timedelta(days=31)  # past a 30-day retention period for runs that ended just now


@pytest.fixture
def kept_30_days(acme):
    acme.retention_days = 30
    acme.save()
    return acme


def closed_runs(tenant, record, make_run, count=3):
    runs = [make_run(tenant.slug) for _ in range(count)]
    for run in runs:
        run["status"], run["ended_at"] = "succeeded", timezone.now().isoformat()
    record(tenant, *runs)
    return [run["run_id"] for run in runs]


def present(tenant):
    return set(Run.objects.filter(tenant=tenant).values_list("run_id", flat=True))


def test_closed_runs_past_retention_are_removed_with_a_signed_record(
        kept_30_days, record, make_run):
    acme = kept_30_days
    run_ids = closed_runs(acme, record, make_run)
    seal_tenant_digest(acme)  # a digest signed these runs before they were removed

    report = apply_retention(acme, timezone.now() + LATER)

    assert report.removed_runs == 3
    assert not present(acme) & set(run_ids)
    assert not ToolCall.objects.filter(tenant=acme, run__run_id__in=run_ids).exists()
    record_ = RemovalRecord.objects.get(tenant=acme)
    assert set(record_.removed_runs) == set(run_ids)
    assert record_.records == report.removed_records > 3
    verified = verify_tenant(acme)
    assert verified.intact, [str(b) for b in verified.breaks]
    assert verified.removed_runs == 3
    note = Annotation.objects.filter(tenant=acme, annotation_kind="retention").last()
    assert note is not None
    assert "removal record #1" in note.body


def test_deferred_items_go_with_their_run_and_run_less_ones_after_the_period(
        kept_30_days, record, make_run):
    from runs.deferred import keep_deferred
    from runs.deferred_batch import DeferredIn
    from runs.models import DeferredItem

    acme = kept_30_days
    removed, = closed_runs(acme, record, make_run, count=1)
    running = make_run()
    running["status"], running["ended_at"] = "running", None
    record(acme, running)

    def item(run_id: str, key: str) -> DeferredIn:
        return DeferredIn("batch", "unknown_field", "a newer agent's", {"record": {}}, run_id,
                          key)

    keep_deferred(acme, [item(removed, "a"), item(running["run_id"], "b"), item("", "c")])

    apply_retention(acme, timezone.now() + LATER)

    assert set(DeferredItem.objects.values_list("key", flat=True)) == {"b"}


def test_runs_not_yet_due_still_running_or_of_a_tenant_without_retention_stay(
        kept_30_days, globex, record, make_run):
    acme = kept_30_days
    recent = closed_runs(acme, record, make_run, 1)
    running = make_run()
    running["status"], running["ended_at"] = "running", None
    record(acme, running)
    other = closed_runs(globex, record, make_run, 2)

    assert apply_retention(acme, timezone.now()).removed_runs == 0  # not due yet
    assert apply_retention(globex, timezone.now() + LATER * 10).removed_runs == 0
    report = apply_retention(acme, timezone.now() + LATER)

    assert report.removed_runs == 1
    assert running["run_id"] in present(acme)
    assert recent[0] not in present(acme)
    assert set(other) <= present(globex)
    assert "governance" in present(acme)  # the log of interventions is never due


def test_a_dry_run_says_what_is_due_and_removes_nothing(kept_30_days, record, make_run):
    run_ids = closed_runs(kept_30_days, record, make_run, 2)
    report = apply_retention(kept_30_days, timezone.now() + LATER, dry_run=True)
    assert report.due == 2
    assert report.removed_runs == 0
    assert set(run_ids) <= present(kept_30_days)


def test_a_legal_hold_keeps_its_run_until_released(kept_30_days, alice, record, make_run):
    acme = kept_30_days
    held, free = closed_runs(acme, record, make_run, 2)
    hold = place_legal_hold(acme, by=alice, reason="matter 2026-17", run_id=held)

    report = apply_retention(acme, timezone.now() + LATER)
    assert report.held["legal hold"] == 1
    assert held in present(acme)
    assert free not in present(acme)

    release_legal_hold(hold, by=alice)
    apply_retention(acme, timezone.now() + LATER)
    assert held not in present(acme)
    notes = Annotation.objects.filter(tenant=acme, annotation_kind="retention",
                                      data__legal_hold=hold.pk)
    assert notes.count() == 2  # placed and released, by whom is on each


def test_a_tenant_wide_hold_keeps_every_run(kept_30_days, alice, record, make_run):
    run_ids = closed_runs(kept_30_days, record, make_run, 2)
    place_legal_hold(kept_30_days, by=alice, reason="litigation hold")
    assert apply_retention(kept_30_days, timezone.now() + LATER).removed_runs == 0
    assert set(run_ids) <= present(kept_30_days)


def test_a_hold_needs_a_reason_and_a_run_of_the_tenant(kept_30_days, globex, alice, record,
                                                       make_run):
    from django.core.exceptions import ValidationError

    other = closed_runs(globex, record, make_run, 1)[0]
    with pytest.raises(ValidationError, match="reason"):
        place_legal_hold(kept_30_days, by=alice, reason="  ")
    with pytest.raises(ValidationError, match="no run"):
        place_legal_hold(kept_30_days, by=alice, reason="matter", run_id=other)
    assert not LegalHold.objects.exists()


def test_a_run_replayed_by_another_is_held_by_the_link(kept_30_days, record, make_run):
    acme = kept_30_days
    from core.canonical import GENESIS

    original = closed_runs(acme, record, make_run, 1)[0]
    source = Run.objects.get(run_id=original)
    replay = Run(tenant=acme, run_id="replay-1", agent=source.agent, seq=0,
                 started_at=timezone.now(), replay_of=source)
    replay.head_hash = replay.seal(GENESIS)
    replay.save()

    report = apply_retention(acme, timezone.now() + LATER)

    assert report.held["linked"] == 1
    assert original in present(acme)


def test_runs_decided_under_a_governed_exception_in_force_are_held(
        kept_30_days, alice, record, make_run):
    from django.contrib.auth.models import User

    from core.services import grant_role
    from policies.exceptions import grant_exception, request_exception
    from policies.models import Decision, Policy, Rule
    from policies.services import create_draft, publish_policy_version

    acme = kept_30_days
    run_id = closed_runs(acme, record, make_run, 1)[0]
    policy = Policy.objects.create(tenant=acme, name="tools")
    draft = create_draft(policy, by=alice, change_note="deny deletes")
    Rule.objects.create(tenant=acme, version=draft, name="no deletes", tool="delete_*",
                        effect="deny")
    publisher = User.objects.create_user("publisher")
    grant_role(publisher, "manage_policies", acme)
    version = publish_policy_version(draft, by=publisher)
    exception = request_exception(acme, by=alice, tool="delete_*", action_class="delete",
                                  policy_version=version, justification="backlog cleanup",
                                  starts_at=timezone.now(),
                                  ends_at=timezone.now() + LATER * 2)
    grant_exception(exception, by=publisher)
    Decision.objects.create(tenant=acme, run_id=run_id, tool="delete_record",
                            action_class="delete", mode="live", input={}, effect="allow",
                            policy_version=version, engine="embedded", latency_us=1,
                            exception=exception)

    report = apply_retention(acme, timezone.now() + LATER)

    assert report.held["governed exception"] == 1
    assert run_id in present(acme)


def test_a_run_whose_chain_is_broken_is_never_removed(kept_30_days, record, make_run):
    from tests.runs.test_tamper_detection import bypassing_triggers

    acme = kept_30_days
    broken, intact = closed_runs(acme, record, make_run, 2)
    call = ToolCall.objects.filter(run__run_id=broken)[0]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET output = %s WHERE id = %s",
                       ["{\"forged\": true}", call.pk])

    report = apply_retention(acme, timezone.now() + LATER)

    assert report.not_intact == [broken]
    assert broken in present(acme)
    assert intact not in present(acme)


def test_a_run_deleted_by_hand_after_a_digest_is_reported_missing(acme, record, make_run):
    from tests.runs.test_tamper_detection import bypassing_triggers

    run_ids = closed_runs(acme, record, make_run, 2)
    seal_tenant_digest(acme)
    gone = Run.objects.get(run_id=run_ids[0])
    with bypassing_triggers() as cursor:
        for table in ("runs_annotation", "runs_toolcall", "runs_modelcall", "runs_step"):
            cursor.execute(f"DELETE FROM {table} WHERE run_id = %s", [gone.pk])
        cursor.execute("DELETE FROM runs_run WHERE id = %s", [gone.pk])

    breaks = verify_tenant(acme).breaks

    assert [(b.run_id, b.problem) for b in breaks] == [(run_ids[0], "missing")]
    assert "no removal record accounts for it" in breaks[0].detail


def test_a_forged_removal_record_does_not_excuse_a_missing_run(kept_30_days, record, make_run):
    from tests.runs.test_tamper_detection import bypassing_triggers

    acme = kept_30_days
    run_ids = closed_runs(acme, record, make_run, 1)
    seal_tenant_digest(acme)
    apply_retention(acme, timezone.now() + LATER)
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_removalrecord SET records = records + 1")

    problems = [(b.run_id, b.problem) for b in verify_tenant(acme).breaks]

    assert ("*", "digest") in problems  # the removal record was modified
    assert (run_ids[0], "missing") in problems  # so it vouches for nothing


@pytest.mark.postgres
def test_the_database_still_refuses_deletes_outside_retention(kept_30_days, record, make_run):
    from django.db import transaction
    from django.db.utils import DatabaseError

    run_id = closed_runs(kept_30_days, record, make_run, 1)[0]
    pk = Run.objects.get(run_id=run_id).pk
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute("DELETE FROM runs_toolcall WHERE run_id = %s", [pk])
    seal_tenant_digest(kept_30_days)
    apply_retention(kept_30_days, timezone.now() + LATER)
    def delete_as_retention_would(table: str) -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL ledger.removal = 'retention'")
            cursor.execute(f"DELETE FROM {table}")

    for table in ("runs_removalrecord", "runs_tenantdigest"):  # what vouches for removals
        with pytest.raises(DatabaseError, match="append-only"):
            delete_as_retention_would(table)


def test_the_ledger_command_places_holds_and_applies_retention(kept_30_days, alice, bob, record,
                                                               make_run, capsys):
    kept_30_days.retention_days = 0  # due as soon as closed: the command runs "now"
    kept_30_days.save()
    run_id = closed_runs(kept_30_days, record, make_run, 1)[0]
    assert main(["--as", "alice", "hold", "--tenant", "acme", "--run-id", run_id,
                 "--reason", "audit 7"]) == EXIT_OK
    assert main(["--as", "alice", "retention", "--tenant", "acme", "--dry-run"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "legal hold #" in out
    assert "(dry run)" in out
    assert "1 by legal hold" in out
    hold = LegalHold.objects.get()
    assert main(["--as", "alice", "hold", "--tenant", "acme", "--release", str(hold.pk)]) == 0
    assert main(["--as", "bob", "retention", "--tenant", "acme"]) == 3  # ingest only
    assert main(["--as", "alice", "retention", "--tenant", "acme"]) == EXIT_OK
    assert run_id not in present(kept_30_days)
    assert "removed 1 runs" in capsys.readouterr().out


def test_an_export_under_review_holds_the_runs_of_its_window(kept_30_days, alice, bob, record,
                                                              make_run):
    from django.core.exceptions import PermissionDenied

    from exports.models import AuditExport
    from exports.review import set_under_review

    acme = kept_30_days
    run_ids = closed_runs(acme, record, make_run, 2)
    started = Run.objects.filter(run_id__in=run_ids).order_by("started_at")
    first = started[0]
    export = AuditExport.objects.create(
        tenant=acme, window_from=first.started_at, window_to=first.started_at +
        timedelta(microseconds=1), requested_by=alice)
    with pytest.raises(PermissionDenied):
        set_under_review(export, by=bob, under_review=True)
    set_under_review(export, by=alice, under_review=True)

    report = apply_retention(acme, timezone.now() + LATER)

    assert report.held["export under review"] == 1
    assert present(acme) & set(run_ids) == {first.run_id}
    set_under_review(export, by=alice, under_review=False)
    apply_retention(acme, timezone.now() + LATER)
    assert first.run_id not in present(acme)


def test_a_run_linked_to_an_open_incident_is_held(kept_30_days, alice, record, make_run):
    from incidents.services import link_to_incident, open_incident

    acme = kept_30_days
    linked, free = closed_runs(acme, record, make_run, count=2)
    incident = open_incident(acme, "refunds sent twice", by=alice)
    link_to_incident(incident, by=alice, run_ids=[linked])

    report = apply_retention(acme, timezone.now() + LATER)

    assert report.removed_runs == 1
    assert present(acme) & {linked, free} == {linked}
