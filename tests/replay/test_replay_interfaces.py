"""Replays through the API, the pages and ``ledger replay``; secrets never leave the backend;
an MCP server serves as a replayed tool."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from django.core import serializers
from django.urls import reverse

from approvals.models import ApprovalRequest
from ledger_portal.cli import main
from operations.models import Replay, ReplayStep
from operations.replay import start_replay
from policies.models import Decision
from runs.models import Annotation, Tool

from .conftest import TOKEN
from .scenario import RUN_ID, recorded_run, same_as_recorded, stored_run, walk, wire_tools
from .toolservers import mcp_tool_server

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorded(acme, record, tool_server):
    record(acme, recorded_run())
    return wire_tools(acme, tool_server)


def test_the_api_starts_a_replay_and_shows_its_progress_and_steps(acme, alice, recorded,
                                                                  key_client):
    client = key_client(acme, ["operate", "view_ledger"])
    response = client.post("/api/v1/replays/", {"run_id": RUN_ID, "until_step": 2},
                           format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["mode"], body["status"], body["until_step"]) == ("sandbox", "queued", 2)
    walk(Replay.objects.get(pk=body["id"]))
    detail = client.get(reverse("api:replay-detail", args=[body["id"]])).json()
    assert detail["status"] == "succeeded"
    assert detail["progress"] == {"steps_done": 2, "steps_total": 2, "percent": 100}
    assert [s["mode_used"] for s in detail["steps"]] == ["dry_run", "dry_run"]
    assert detail["steps"][0]["decision"]["effect"] == "allow"
    listed = client.get("/api/v1/replays/", {"run_id": RUN_ID}).json()
    assert [r["id"] for r in listed["results"]] == [body["id"]]


def test_the_api_refuses_a_replay_without_the_operate_scope(acme, recorded, key_client):
    client = key_client(acme, ["view_ledger"])
    response = client.post("/api/v1/replays/", {"run_id": RUN_ID}, format="json")
    assert response.status_code == 404
    assert not Replay.objects.exists()


def test_the_api_explains_an_outage_refusal(acme, recorded, key_client):
    acme.outage_mode = True
    acme.save()
    client = key_client(acme, ["operate", "view_ledger"])
    response = client.post("/api/v1/replays/", {"run_id": RUN_ID, "mode": "live"},
                           format="json")
    assert response.status_code == 403
    assert "outage mode" in response.json()["detail"]


def test_another_tenant_cannot_replay_acmes_run(acme, charlie, recorded, user_client):
    response = user_client(charlie).post("/api/v1/replays/", {"run_id": RUN_ID},
                                         format="json")
    assert response.status_code == 404
    assert not Replay.objects.exists()


def test_the_timeline_page_starts_a_replay_and_links_its_page(acme, alice, recorded, client):
    client.force_login(alice)
    timeline = client.get(reverse("run-timeline", args=["acme", RUN_ID]))
    assert b'id="replay-form"' in timeline.content
    response = client.post(reverse("run-replay", args=["acme", RUN_ID]),
                           {"mode": "sandbox", "until_step": "3"})
    replay = Replay.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("replay-detail", args=["acme", replay.pk])
    walk(replay)
    page = client.get(reverse("replay-detail", args=["acme", replay.pk])).content.decode()
    assert "3 / 3 steps" in page
    assert "recorded output stood in (stub)" in page
    timeline = client.get(reverse("run-timeline", args=["acme", RUN_ID])).content.decode()
    assert reverse("replay-detail", args=["acme", replay.pk]) in timeline


def test_the_replay_form_is_not_offered_without_the_operate_role(acme, bob, recorded, client):
    from core.services import grant_role

    grant_role(bob, "view_ledger", acme)
    client.force_login(bob)
    timeline = client.get(reverse("run-timeline", args=["acme", RUN_ID]))
    assert b'id="replay-form"' not in timeline.content
    assert client.post(reverse("run-replay", args=["acme", RUN_ID])).status_code == 404


def test_divergences_show_on_the_page_and_download_as_json(acme, alice, record, tool_server,
                                                          client):
    record(acme, recorded_run())
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-v2", same_as_recorded("c2", state="pending"))})
    replay = walk(start_replay(stored_run(acme), by=alice))
    client.force_login(alice)
    page = client.get(reverse("replay-detail", args=["acme", replay.pk])).content.decode()
    assert "1 step flagged" in page
    assert "$.state" in page
    download = client.get(reverse("replay-divergences", args=["acme", replay.pk]))
    assert download["Content-Disposition"].startswith("attachment;")
    report = orjson.loads(download.content)
    assert report["run_id"] == RUN_ID
    [step] = report["divergent_steps"]
    assert step["differences"] == [{"path": "$.state", "change": "changed",
                                    "recorded": "refunded", "replayed": "pending"}]


def test_replay_pages_are_404_across_tenants(acme, alice, charlie, recorded, client):
    replay = start_replay(stored_run(acme), by=alice)
    client.force_login(charlie)
    for name in ("replay-detail", "replay-divergences"):
        assert client.get(reverse(name, args=["acme", replay.pk])).status_code == 404
        assert client.get(reverse(name, args=["globex", replay.pk])).status_code == 404
    assert client.post(reverse("run-replay", args=["acme", RUN_ID])).status_code == 404


def test_ledger_replay_walks_the_run_and_prints_the_divergences(acme, alice, record,
                                                                tool_server, capsys):
    record(acme, recorded_run())
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-v2", same_as_recorded("c2", state="pending"))})
    code = main(["--as", "alice", "replay", "--run-id", RUN_ID, "--tenant", "acme",
                 "--sandbox", "--inline", "--quiet"])
    out = capsys.readouterr().out
    assert code == 4  # diverged
    assert "succeeded, 3/3 steps, 1 divergent" in out
    assert "DIVERGED step 2 refund_payment" in out
    assert "$.state changed: - 'refunded'  + 'pending'" in out


def test_ledger_replay_until_step_and_json(acme, alice, recorded, capsys):
    code = main(["--as", "alice", "replay", "--run-id", RUN_ID, "--until-step", "1",
                 "--inline", "--quiet", "--json"])
    report = orjson.loads(capsys.readouterr().out)
    assert code == 0
    assert (report["steps_done"], report["steps_total"], report["divergent_steps"]) == (1, 1, [])


def test_ledger_replay_live_says_it_waits_for_approval(acme, alice, recorded, capsys):
    code = main(["--as", "alice", "replay", "--run-id", RUN_ID, "--live", "--inline",
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    approval = ApprovalRequest.objects.get(kind="live_replay")
    assert f"waits for approval request {approval.pk}" in out


def test_ledger_replay_refuses_live_in_outage_with_exit_3(acme, alice, recorded, capsys):
    acme.outage_mode = True
    acme.save()
    code = main(["--as", "alice", "replay", "--run-id", RUN_ID, "--live", "--inline"])
    assert code == 3
    assert "outage mode" in capsys.readouterr().err


def test_ledger_replay_pins_a_policy_version_by_name_and_number(acme, alice, recorded, capsys):
    from .scenario import allow_everything

    version = allow_everything(acme)
    code = main(["--as", "alice", "replay", "--run-id", RUN_ID, "--inline", "--quiet",
                 "--policy-version", f"{version.policy.name}:{version.number}"])
    assert code == 0
    assert set(ReplayStep.objects.values_list("decision__policy_version", flat=True)) == {
        version.pk}


def test_ledger_replay_of_another_tenants_run_is_not_found(acme, charlie, recorded, capsys):
    assert main(["--as", "charlie", "replay", "--run-id", RUN_ID, "--inline"]) == 1


def test_a_tool_secret_never_reaches_the_database_pages_logs_or_errors(
        acme, alice, record, tool_server, client, caplog, billing_token):
    def leaky(seen: Any) -> tuple[int, Any]:
        return 500, {"error": f"upstream refused {seen.header('Authorization')}"}

    record(acme, recorded_run())
    wire_tools(acme, tool_server,
               lookup_customer={"secret_ref": "env:BILLING_API_TOKEN"},
               refund_payment={"secret_ref": "env:BILLING_API_TOKEN",
                               "endpoint": tool_server.route("/leaky", leaky)})
    caplog.set_level(logging.DEBUG)
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert tool_server.requests_to("/lookup")[0].header("Authorization") == f"Bearer {TOKEN}"
    step = ReplayStep.objects.get(replay=replay, seq=2)
    assert step.status == "failed"
    assert "[secret]" in step.error
    stored = serializers.serialize("json", [
        *Tool.objects.all(), *Tool.history.all(), *Replay.objects.all(),
        *ReplayStep.objects.all(), *Decision.objects.all(), *Annotation.objects.all()])
    assert "env:BILLING_API_TOKEN" in stored  # the reference is stored...
    assert TOKEN not in stored  # ...never the secret
    client.force_login(alice)
    page = client.get(reverse("replay-detail", args=["acme", replay.pk]), {"redaction": "none"})
    assert TOKEN not in page.content.decode()
    api = client.get(reverse("api:replay-detail", args=[replay.pk]), {"redaction": "none"})
    assert TOKEN not in api.content.decode()
    export = client.get(reverse("replay-divergences", args=["acme", replay.pk]))
    assert TOKEN not in export.content.decode()
    assert TOKEN not in caplog.text


def test_personal_data_a_tool_quotes_in_its_error_is_redacted_wherever_the_step_is_shown(
        acme, alice, record, tool_server, client):
    def refuses(seen: Any) -> tuple[int, Any]:
        return 422, {"error": "no refund for ada.lovelace@example.com"}

    record(acme, recorded_run())
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refuses", refuses)})
    replay = walk(start_replay(stored_run(acme), by=alice))
    assert "ada.lovelace@example.com" in ReplayStep.objects.get(replay=replay, seq=2).error
    client.force_login(alice)

    page = client.get(reverse("replay-detail", args=["acme", replay.pk]))
    api = client.get(reverse("api:replay-detail", args=[replay.pk]))
    report = client.get(reverse("replay-divergences", args=["acme", replay.pk]))
    listed = client.get("/api/v1/divergences/")
    for shown in (page, api, report, listed):
        assert shown.status_code == 200
        assert "ada.lovelace@example.com" not in shown.content.decode()
    assert "no refund for [redacted:confidential]" in api.json()["steps"][1]["error"]
    unredacted = client.get(reverse("api:replay-detail", args=[replay.pk]),
                            {"redaction": "none"}).json()
    assert "ada.lovelace@example.com" in unredacted["steps"][1]["error"]


def test_an_mcp_server_serves_as_a_replayed_tool(acme, alice, record):
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("crm")
    seen: list[dict[str, Any]] = []

    @server.tool()
    def lookup_customer(customer_id: str, dry_run: bool = False) -> dict[str, Any]:
        seen.append({"customer_id": customer_id, "dry_run": dry_run})
        return {"customer_id": customer_id, "name": "Ada", "fetched_at": "now"}

    record(acme, recorded_run())
    with mcp_tool_server(server) as serving:
        Tool.objects.filter(tenant=acme, name="lookup_customer").update(
            connector="mcp", endpoint=serving.url, dry_run_via="flag", dry_run_name="dry_run",
            volatile_fields=["fetched_at"])
        replay = walk(start_replay(stored_run(acme), by=alice, until_step=1))
    assert replay.status == "succeeded", replay.failure_reason
    assert seen == [{"customer_id": "cust-1", "dry_run": True}]
    step = ReplayStep.objects.get(replay=replay)
    assert (step.mode_used, step.flagged) == ("dry_run", False)
