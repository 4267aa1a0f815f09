"""The demo tells the whole story: governance in place, tools reachable at the demo's own tool
server, and the open incident's replay (diverging), rollback (partial) and a finished export,
each made by the real services against that server; seeding twice adds nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command

from approvals.services import decide_approval
from core import signing
from core.models import Tenant
from exports.models import AuditExport
from exports.storage import export_storage
from exports.verify import verify_bundle
from incidents.models import Incident
from ledger_portal import demo_story, demo_tools
from operations.models import Replay, Rollback
from operations.replay import execute_replay, start_replay
from policies.models import GovernedException, PolicyVersion
from policies.services import frozen_tools
from runs.models import Run, Tool, ToolChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def seeded(demo_tool_server, capsys):
    call_command("seed_demo", runs=6)
    capsys.readouterr()
    return Tenant.objects.get(slug="acme")


def user(username: str) -> User:
    return User.objects.get(username=username)


def test_every_tool_is_reached_at_the_demo_tool_server(seeded, demo_tool_server):
    tools = Tool.objects.filter(tenant=seeded)
    assert tools.count() >= 5
    for tool in tools:
        assert tool.connector == "http"
        assert tool.endpoint == f"{demo_tool_server.url}/tools/{tool.name}"
        assert tool.has_dry_run
        assert tool.can_compensate == tool.supports_rollback
    # a governed change: one governor proposed it, the other confirmed it
    change = ToolChange.objects.filter(tool__tenant=seeded, tool__name="refund_payment").get()
    assert (change.status, change.proposed_by, change.decided_by) == (
        "confirmed", user("governor"), user("governor2"))


def test_the_governors_find_a_published_policy_a_draft_and_an_exception(seeded):
    versions = PolicyVersion.objects.filter(tenant=seeded, policy__name="acme-baseline")
    published = versions.get(status="published")
    assert (published.author, published.publisher) == (user("governor"), user("governor2"))
    draft = versions.get(status="draft")
    assert draft.author == user("governor")  # so governor2 reviews and publishes it
    exception = GovernedException.objects.get(tenant=seeded)
    assert (exception.status, exception.policy_version) == ("active", published)


def test_the_incidents_replay_diverges_on_the_refunds(seeded, demo_tool_server):
    replay = Replay.objects.get(tenant=seeded, run__run_id=demo_story.RUN_ID)
    assert (replay.mode, replay.status) == ("sandbox", "succeeded")
    diverged = replay.steps.filter(flagged=True).order_by("seq")
    assert [s.tool.name for s in diverged] == ["refund_payment", "refund_payment"]
    assert diverged[0].divergence == [{"path": "$.status", "change": "changed",
                                       "recorded": "succeeded", "replayed": "pending_review"}]
    dry_runs = [s for s in demo_tool_server.seen if s.header("X-Dry-Run") == "true"]
    assert len(dry_runs) == replay.steps_total == 5  # every step asked the tool for a dry run


def test_the_duplicate_refunds_rollback_is_partial(seeded, demo_tool_server):
    rollback = Rollback.objects.get(tenant=seeded)
    assert rollback.tool_call.call_id == demo_story.DUPLICATE_REFUND
    assert rollback.status == "partial"
    assert rollback.remaining_side_effects == [demo_tools.REFUND_E_MAIL]
    sent = demo_tool_server.requests_to("/tools/refund_payment/compensate")
    assert [s.header("Idempotency-Key") for s in sent] == [rollback.idempotency_key]
    assert rollback.incident == Incident.objects.get(tenant=seeded, status="open")


def test_the_incident_links_its_run_call_replay_rollback_and_freeze(seeded):
    incident = Incident.objects.get(tenant=seeded, status="open")
    assert incident.runs.filter(run_id=demo_story.RUN_ID).exists()
    assert incident.tool_calls.filter(call_id=demo_story.DUPLICATE_REFUND).exists()
    assert incident.replays.count() == 1
    assert frozen_tools(seeded) == {"send_email": "sandbox_only"}
    assert incident.policy_versions.filter(policy__name="tool-freezes").exists()


def test_the_export_is_finished_and_verifies_offline(seeded, tmp_path):
    export = AuditExport.objects.get(tenant=seeded)
    assert (export.status, export.requested_by) == ("done", user("auditor"))
    bundle = Path(tmp_path / "download.tar")
    with export_storage().open(export.file, "rb") as source:
        bundle.write_bytes(source.read())
    report = verify_bundle(bundle, signing.public_key_b64())
    assert report.ok, report.problems


def test_seeding_again_adds_nothing_and_calls_no_tool(seeded, demo_tool_server):
    counts = [m.objects.filter(tenant=seeded).count() for m in (
        Replay, Rollback, AuditExport, PolicyVersion, GovernedException, Run)]
    changes = ToolChange.objects.filter(tool__tenant=seeded).count()
    sent = len(demo_tool_server.seen)
    call_command("seed_demo", runs=6)
    assert [m.objects.filter(tenant=seeded).count() for m in (
        Replay, Rollback, AuditExport, PolicyVersion, GovernedException, Run)] == counts
    assert ToolChange.objects.filter(tool__tenant=seeded).count() == changes
    assert len(demo_tool_server.seen) == sent + 1  # only the seed's look for a running server


def test_a_live_replay_of_the_story_reaches_the_running_tool_server(seeded, demo_tool_server):
    run = Run.objects.get(tenant=seeded, run_id=demo_story.RUN_ID)
    seeding = len(demo_tool_server.seen)
    replay = start_replay(run, by=user("operator"), mode="live", until_step=4)
    assert replay.approval is not None
    for approver in ("approver", "approver2"):  # the run sent an e-mail: exfil, four eyes
        decide_approval(replay.approval, by=user(approver), approve=True,
                        justification="replaying the double refund for the incident")
    execute_replay(replay.pk, replay.task_id)
    replay.refresh_from_db()
    assert (replay.status, replay.steps_done) == ("succeeded", 4)
    live = demo_tool_server.seen[seeding:]
    assert [(s.path, s.header("Idempotency-Key")) for s in live] == [
        ("/tools/get_customer", f"replay-{replay.pk}-{demo_story.RUN_ID}-t1.1"),
        ("/tools/refund_payment", "idem-refund-1042-a"),  # the original keys, reused
        ("/tools/refund_payment", "idem-refund-1042-b"),
        ("/tools/update_ticket", "idem-ticket-1042")]
    assert [s.header("X-Dry-Run") for s in live] == [None] * 4
    assert replay.divergent_steps == 2


def test_the_demo_tools_listen_on_loopback_only(monkeypatch):
    monkeypatch.setenv("DEMO_TOOLS_ADDR", "0.0.0.0:8765")
    with pytest.raises(ValueError, match="loopback only"):
        demo_tools.address()


def test_without_jobs_the_seed_runs_no_replay_rollback_or_export(demo_tool_server, capsys):
    call_command("seed_demo", runs=6, no_jobs=True)
    acme = Tenant.objects.get(slug="acme")
    assert not Replay.objects.filter(tenant=acme).exists()
    assert not Rollback.objects.filter(tenant=acme).exists()
    assert not AuditExport.objects.filter(tenant=acme).exists()
    assert demo_tool_server.seen == []


def test_the_auditor_verifies_the_downloaded_export_with_the_ledger_command(seeded, tmp_path):
    """The tour's last step, as the auditor types it: the installed ``ledger`` script, in a
    shell of its own (no Django set up beforehand)."""
    export = AuditExport.objects.get(tenant=seeded)
    bundle = tmp_path / "download.tar"
    with export_storage().open(export.file, "rb") as source:
        bundle.write_bytes(source.read())
    ledger = Path(sys.executable).with_name("ledger")
    done = subprocess.run([str(ledger), "verify-export", str(bundle), "--public-key",
                           signing.public_key_b64()], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
