"""MCP servers over stdio, as agent teams deploy them: the portal starts the server itself.

The command comes from the platform operator's allowlist (``LEDGER_MCP_STDIO_COMMANDS``); a
tenant's tool only names an entry of it, and nothing a tenant user types (admin, API,
services) becomes a command. One server serves a whole replay; it gets no environment of the
portal (only PATH, a HOME of its own and the tool's own credential), it is killed at its time
limit, and no process is left behind whatever happens. Driven with the real ``mcp-server-time``
from PyPI and tiny servers of our own (tests/replay/stdio_servers.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.urls import reverse

from core.services import grant_role
from operations.connectors import connector_for
from operations.models import ReplayStep
from operations.replay import start_replay
from runs.models import Tool

from .scenario import allow_everything, approve, stored_run, walk

pytestmark = pytest.mark.django_db

SERVERS = Path(__file__).with_name("stdio_servers.py")
TIME_SERVER = Path(sys.executable).with_name("mcp-server-time")  # installed from PyPI
OWN_TOKEN = "tok-reporter-0wn-credential-55"
T0 = "2026-01-05T10:00:00+00:00"


@pytest.fixture
def pid_file(tmp_path: Path) -> Path:
    path = tmp_path / "server-pids"
    path.touch()
    return path


@pytest.fixture
def allowlist(settings: Any, pid_file: Path) -> dict[str, Any]:
    """What the platform operator allows: the time server from PyPI and our test servers."""
    commands: dict[str, Any] = {
        "time": [str(TIME_SERVER), "--local-timezone", "UTC"],
        "report-env": {"argv": [sys.executable, str(SERVERS), "report_env", str(pid_file)],
                       "secret_env": "REPORTER_TOKEN"},
        "hang": [sys.executable, str(SERVERS), "hang", str(pid_file)],
        "hang-at-start": [sys.executable, str(SERVERS), "hang_at_start", str(pid_file)],
        "crash": [sys.executable, str(SERVERS), "crash", str(pid_file)],
    }
    settings.LEDGER_MCP_STDIO_COMMANDS = commands
    return commands


def started(pid_file: Path) -> list[int]:
    return [int(line) for line in pid_file.read_text().split()]


def alive(pid: int) -> bool:
    """A process that still exists, a zombie (exited but never reaped) included."""
    return Path(f"/proc/{pid}").exists()


def stdio_tool(tenant: Any, name: str, server: str, **fields: Any) -> Tool:
    fields.setdefault("action_class", "read")
    tool, _ = Tool.objects.update_or_create(tenant=tenant, name=name, defaults={
        "connector": "mcp", "stdio_server": server, **fields})
    return tool


def envelope(structured: dict[str, Any], *, as_text_only: bool = True) -> dict[str, Any]:
    """An MCP tools/call result as an agent's MCP client records it: the JSON as a text block
    (pretty-printed, its keys in another order), annotations and _meta fields."""
    import json

    text = json.dumps(dict(reversed(list(structured.items()))), indent=2)
    result: dict[str, Any] = {
        "content": [{"type": "text", "text": text, "annotations": {"audience": ["user"]},
                     "_meta": {"client/trace": "abc"}}],
        "isError": False, "_meta": {"io.example/request": "r-1"}}
    if not as_text_only:
        result["structuredContent"] = structured
    return result


CONVERTED = {"source": {"timezone": "Europe/London", "datetime": "2026-01-05T12:00:00+00:00",
                        "day_of_week": "Monday", "is_dst": False},
             "target": {"timezone": "Asia/Tokyo", "datetime": "2026-01-05T21:00:00+09:00",
                        "day_of_week": "Monday", "is_dst": False},
             "time_difference": "+9.0h"}
CONVERT_ARGS = {"source_timezone": "Europe/London", "time": "12:00",
                "target_timezone": "Asia/Tokyo"}


def time_run(run_id: str = "run-time-1", calls: int = 2) -> dict[str, Any]:
    return {"run_id": run_id, "agent_id": "scheduler", "goal": "book a call across zones",
            "started_at": T0, "status": "succeeded", "ended_at": T0,
            "tool_calls": [{"call_id": f"{run_id}-c{i}", "tool": "convert_time",
                            "action_class": "read", "input": CONVERT_ARGS,
                            "output": envelope(CONVERTED), "status": "succeeded",
                            "started_at": T0} for i in range(1, calls + 1)]}


def env_run(run_id: str = "run-env-1", calls: int = 3, tool: str = "environment"
            ) -> dict[str, Any]:
    return {"run_id": run_id, "agent_id": "inspector", "goal": "look around",
            "started_at": T0, "status": "succeeded", "ended_at": T0,
            "tool_calls": [{"call_id": f"{run_id}-c{i}", "tool": tool, "action_class": "read",
                            "input": {}, "output": {}, "status": "succeeded",
                            "started_at": T0} for i in range(1, calls + 1)]}


# -- reaching a server of the allowlist -----------------------------------------------------

def test_a_tool_calls_the_time_server_from_pypi_over_stdio(acme, allowlist):
    tool = stdio_tool(acme, "convert_time", "time")
    result = connector_for(tool).call(CONVERT_ARGS, idempotency_key="k-1", dry_run=False)
    assert result.ok, result.error
    assert result.output["time_difference"] == "+9.0h"
    assert result.output["target"]["timezone"] == "Asia/Tokyo"


def test_a_sandbox_replay_drives_the_time_server_and_finds_no_false_divergence(
        acme, alice, allowlist, record):
    """The recorded outputs are full MCP results (a pretty-printed JSON text block, keys in
    another order, annotations, _meta); the server answers structuredContent: the same."""
    record(acme, time_run())
    stdio_tool(acme, "convert_time", "time", dry_run_via="flag", dry_run_name="dry_run",
               volatile_fields=["datetime", "day_of_week", "is_dst"])
    replay = walk(start_replay(stored_run(acme, "run-time-1"), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    steps = list(ReplayStep.objects.filter(replay=replay).order_by("seq"))
    assert [(s.mode_used, s.status) for s in steps] == [("dry_run", "succeeded")] * 2
    assert [s.divergence for s in steps] == [None, None]
    assert replay.divergent_steps == 0


def test_a_live_replay_reaches_the_time_server_only_after_approval_and_policy_allow(
        acme, alice, allowlist, record):
    record(acme, time_run("run-time-live", calls=1))
    stdio_tool(acme, "convert_time", "time", volatile_fields=["datetime", "day_of_week"])
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme, "run-time-live"), by=alice, mode="live")
    assert walk(replay).status == "waiting_approval"
    assert not ReplayStep.objects.filter(replay=replay).exists()
    approve(replay.approval)
    replay = walk(replay)
    assert replay.status == "succeeded", replay.failure_reason
    [step] = ReplayStep.objects.filter(replay=replay)
    assert (step.mode_used, step.status, step.flagged) == ("live", "succeeded", False)
    output: Any = step.output
    assert output["time_difference"] == "+9.0h"
    assert ReplayStep.objects.filter(pk=step.pk, decision__effect="allow").exists()


def test_one_server_serves_every_call_of_a_replay_and_is_gone_after_it(
        acme, alice, allowlist, record, pid_file, billing_env):
    record(acme, env_run(calls=3))
    stdio_tool(acme, "environment", "report-env", dry_run_via="flag", dry_run_name="dry_run",
               secret_ref="env:REPORTER_TOKEN", volatile_fields=["env", "cwd", "pid",
                                                                  "sha256"])
    replay = walk(start_replay(stored_run(acme, "run-env-1"), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    [pid] = started(pid_file)
    outputs: list[Any] = [s.output for s in ReplayStep.objects.filter(replay=replay)]
    assert [output["pid"] for output in outputs] == [pid] * 3
    assert not alive(pid)


# -- what a tenant user cannot do ----------------------------------------------------------

@pytest.mark.parametrize("typed", ["sh", "/bin/sh -c 'env > /tmp/loot'",
                                   '["/bin/sh", "-c", "id"]', "time; rm -rf /"])
def test_a_tool_cannot_name_a_command_that_is_not_on_the_allowlist(acme, allowlist, typed):
    tool = Tool(tenant=acme, name="t", connector="mcp", stdio_server=typed)
    with pytest.raises(ValidationError) as caught:
        tool.full_clean()
    message = " ".join(caught.value.message_dict["stdio_server"])
    assert "LEDGER_MCP_STDIO_COMMANDS" in message
    assert "crash, hang, hang-at-start, report-env, time" in message


@pytest.fixture
def dave(acme) -> User:
    """A second person who manages acme's policies."""
    user = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
    grant_role(user, "manage_policies", acme)
    return user


def test_the_admin_refuses_a_typed_command_and_offers_only_the_allowlist(
        acme, alice, allowlist, client, pid_file):
    tool = Tool.objects.create(tenant=acme, name="lookup", action_class="read")
    client.force_login(alice)
    url = reverse("admin:runs_tool_change", args=[tool.pk])
    form = client.get(url).context["adminform"].form
    offered = [value for value, _label in form.fields["stdio_server"].choices]
    assert offered == ["", "crash", "hang", "hang-at-start", "report-env", "time"]
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(connector="mcp", stdio_server=f"{sys.executable} -c 'import os'",
                volatile_fields="[]")
    response = client.post(url, data)
    assert response.status_code == 200  # the form again, with the error
    assert "stdio_server" in response.context["adminform"].form.errors
    tool.refresh_from_db()
    assert (tool.connector, tool.stdio_server) == ("none", "")
    assert not tool.changes.exists()
    assert started(pid_file) == []


def test_choosing_an_allowed_server_in_the_admin_is_a_governed_change(
        acme, alice, dave, allowlist, client):
    from operations.tool_changes import confirm_tool_change

    tool = Tool.objects.create(tenant=acme, name="convert_time", action_class="read")
    client.force_login(alice)
    url = reverse("admin:runs_tool_change", args=[tool.pk])
    form = client.get(url).context["adminform"].form
    data = {name: value for name, value in form.initial.items() if value is not None}
    data.update(connector="mcp", stdio_server="time", volatile_fields="[]")
    assert client.post(url, data).status_code == 302
    tool.refresh_from_db()
    assert tool.stdio_server == ""  # proposed only
    change = tool.changes.get()
    assert change.proposed == {"connector": "mcp", "stdio_server": "time"}
    assert confirm_tool_change(change, by=dave).stdio_server == "time"


def test_a_proposed_change_cannot_name_a_command_either(acme, alice, allowlist):
    from operations.tool_changes import propose_tool_change

    tool = Tool.objects.create(tenant=acme, name="lookup", action_class="read")
    with pytest.raises(ValidationError, match="LEDGER_MCP_STDIO_COMMANDS"):
        propose_tool_change(tool, {"connector": "mcp", "stdio_server": "/bin/sh"}, by=alice)
    assert not tool.changes.exists()


def test_a_change_confirmed_after_its_server_left_the_allowlist_is_refused(
        acme, alice, dave, allowlist, settings):
    from operations.tool_changes import confirm_tool_change, propose_tool_change

    tool = Tool.objects.create(tenant=acme, name="environment", action_class="read")
    change: Any = propose_tool_change(tool, {"connector": "mcp", "stdio_server": "report-env"},
                                      by=alice)
    settings.LEDGER_MCP_STDIO_COMMANDS = {"time": allowlist["time"]}
    with pytest.raises(ValidationError, match="LEDGER_MCP_STDIO_COMMANDS"):
        confirm_tool_change(change, by=dave)
    tool.refresh_from_db()
    assert tool.stdio_server == ""


def test_an_agents_batch_cannot_set_a_command_or_a_server(acme, key_client, allowlist):
    client = key_client(acme, ["ingest"])
    run = env_run("run-sneaky", calls=1)
    run["tool_calls"][0].update(connector="mcp", stdio_server="report-env",
                                command=["/bin/sh", "-c", "id"])
    response = client.post("/api/v1/batches/", {"runs": [run]}, format="json")
    assert response.status_code == 400
    assert not Tool.objects.filter(tenant=acme).exclude(stdio_server="").exists()


def test_a_server_taken_off_the_allowlist_is_not_started(acme, allowlist, settings,
                                                         pid_file):
    tool = stdio_tool(acme, "environment", "report-env")
    settings.LEDGER_MCP_STDIO_COMMANDS = {"time": allowlist["time"]}
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "report-env" in result.error
    assert "LEDGER_MCP_STDIO_COMMANDS" in result.error
    assert started(pid_file) == []


# -- the server's environment --------------------------------------------------------------

@pytest.fixture
def billing_env(monkeypatch: Any) -> None:
    monkeypatch.setenv("LEDGER_TENANT_ACME_REPORTER_TOKEN", OWN_TOKEN)


PLANTED = {
    "SECRET_KEY": "pl4nted-signing-key-0123456789abcdef",
    "DATABASE_URL": "postgres://ledger:Pl4nted-db-pa55word@db.internal:5432/ledger",
    "REDIS_URL": "redis://:Pl4nted-redis@cache.internal:6379/0",
    "AWS_SECRET_ACCESS_KEY": "Pl4nted/aws/SECRET/key",
    "LEDGER_TENANT_ACME_BILLING_API_TOKEN": "tok-acme-other-tool-credential",
    "LEDGER_TENANT_GLOBEX_REPORTER_TOKEN": "tok-globex-same-name-other-tenant",
}


def test_the_server_gets_no_portal_secret_only_path_its_own_home_and_its_credential(
        acme, allowlist, billing_env, monkeypatch, settings):
    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    planted = [*PLANTED.values(), settings.SECRET_KEY]
    tool = stdio_tool(acme, "environment", "report-env", secret_ref="env:REPORTER_TOKEN")
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert result.ok, result.error
    env = result.output["env"]
    # A Python server in the C locale sets LC_CTYPE itself as it starts (PEP 538).
    if env.get("LC_CTYPE") == "C.UTF-8":
        del env["LC_CTYPE"]
    assert sorted(env) == ["HOME", "PATH", "REPORTER_TOKEN"]
    assert env["PATH"] == os.environ["PATH"]
    # its own credential arrived (and is scrubbed from what the portal records)
    assert result.output["sha256"]["REPORTER_TOKEN"] == hashlib.sha256(
        OWN_TOKEN.encode()).hexdigest()
    assert OWN_TOKEN not in repr(result.output)
    assert not any(secret in repr(result.output) for secret in planted)
    home = env["HOME"]
    assert home != os.environ.get("HOME")
    assert home.startswith(tempfile.gettempdir())
    assert result.output["cwd"] == home  # not the portal's folder with its .env files
    assert not Path(home).exists()  # removed with the server


def test_a_credential_goes_only_to_a_server_the_operator_said_takes_one(acme, allowlist,
                                                                        pid_file):
    tool = stdio_tool(acme, "convert_time", "time", secret_ref="env:REPORTER_TOKEN")
    result = connector_for(tool).call(CONVERT_ARGS, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "secret_env" in result.error


# -- time limits and reaping ---------------------------------------------------------------

def test_a_hanging_tool_is_killed_at_its_time_limit(acme, allowlist, pid_file):
    tool = stdio_tool(acme, "wait_forever", "hang", timeout_ms=800)
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "transient")
    assert "no answer within 800 ms" in result.error
    [pid] = started(pid_file)
    assert not alive(pid)


def test_a_server_that_never_answers_initialize_is_killed_at_its_start_time_limit(
        acme, allowlist, pid_file, settings):
    settings.LEDGER_MCP_STDIO_START_TIMEOUT = 2
    tool = stdio_tool(acme, "anything", "hang-at-start")
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "transient")
    assert "'hang-at-start' did not start within 2 s" in result.error
    [pid] = started(pid_file)
    assert not alive(pid)


def test_a_hanging_server_fails_the_live_step_with_the_reason_and_leaves_no_process(
        acme, alice, allowlist, record, pid_file, settings):
    settings.LEDGER_REPLAY_TRANSIENT_RETRIES = 1
    record(acme, env_run("run-hang", calls=1, tool="wait_forever"))
    stdio_tool(acme, "wait_forever", "hang", timeout_ms=800)
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme, "run-hang"), by=alice, mode="live")
    approve(replay.approval)
    replay = walk(replay)
    [step] = ReplayStep.objects.filter(replay=replay)
    assert (step.mode_used, step.status, step.attempts) == ("live", "failed", 2)
    assert "no answer within 800 ms" in step.error
    pids = started(pid_file)
    assert len(pids) == 2  # a server that did not answer is not trusted with the retry
    assert not any(alive(pid) for pid in pids)


@pytest.mark.django_db(transaction=True)  # the tool server's thread writes as the watchdog
def test_a_replay_stopped_midway_leaves_no_server_behind(acme, alice, allowlist, record,
                                                         pid_file, billing_env, tool_server):
    """The watchdog fails a live replay while its second call (HTTP) is in flight: the walk
    stops there, and the stdio server its first call started goes with it."""
    from django.db import connection

    from operations.models import Replay

    run = env_run("run-stop", calls=3)
    run["tool_calls"][1].update(tool="lookup", call_id="run-stop-http")
    record(acme, run)

    def then_the_replay_is_failed(seen: Any) -> tuple[int, Any]:
        Replay.objects.filter(status="running").update(
            status="failed", failure_reason="still running past its deadline")
        connection.close()
        return 200, {}

    Tool.objects.filter(tenant=acme, name="lookup").update(
        connector="http", endpoint=tool_server.route("/lookup", then_the_replay_is_failed))
    stdio_tool(acme, "environment", "report-env", secret_ref="env:REPORTER_TOKEN")
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme, "run-stop"), by=alice, mode="live")
    approve(replay.approval)
    replay = walk(replay)
    assert "past its deadline" in replay.failure_reason
    assert list(ReplayStep.objects.filter(replay=replay).values_list("seq", flat=True)) == [
        1, 2]
    [pid] = started(pid_file)
    assert not alive(pid)


def test_a_server_that_dies_mid_call_is_transient_and_the_retry_gets_a_fresh_one(
        acme, alice, allowlist, record, pid_file, settings):
    settings.LEDGER_REPLAY_TRANSIENT_RETRIES = 1
    record(acme, env_run("run-crash", calls=1, tool="fall_over"))
    stdio_tool(acme, "fall_over", "crash")
    allow_everything(acme)
    replay: Any = start_replay(stored_run(acme, "run-crash"), by=alice, mode="live")
    approve(replay.approval)
    replay = walk(replay)
    [step] = ReplayStep.objects.filter(replay=replay)
    assert (step.status, step.attempts) == ("failed", 2)
    assert "Connection closed" in step.error
    pids = started(pid_file)
    assert len(set(pids)) == 2
    assert not any(alive(pid) for pid in pids)


def test_an_unknown_tool_is_the_servers_answer_not_a_transient_failure(acme, allowlist):
    tool = stdio_tool(acme, "convert_time", "time", remote_name="no_such_tool")
    result = connector_for(tool).call(CONVERT_ARGS, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "Unknown tool: no_such_tool" in result.error


def test_the_idempotency_key_travels_in_the_requests_meta(acme, allowlist, billing_env):
    tool = stdio_tool(acme, "environment", "report-env", secret_ref="env:REPORTER_TOKEN")
    result = connector_for(tool).call({}, idempotency_key="idem-42", dry_run=False)
    assert result.ok, result.error
    assert result.output["idempotency_key"] == "idem-42"


def test_a_rollback_compensates_on_a_server_of_its_own_and_stops_it(acme, allowlist,
                                                                    billing_env, pid_file):
    tool = stdio_tool(acme, "refund", "report-env", secret_ref="env:REPORTER_TOKEN",
                      supports_rollback=True, compensate_endpoint="environment")
    result = connector_for(tool).compensate({"amount": 5}, {"refund_id": "r-1"},
                                            idempotency_key="undo-1")
    assert result.ok, result.error
    assert result.output["idempotency_key"] == "undo-1"
    [pid] = started(pid_file)
    assert result.output["pid"] == pid
    assert not alive(pid)


def test_no_server_outlives_the_replays_time_limit(acme, allowlist, pid_file, settings):
    """Even with a call still waiting on it, a server is stopped at LEDGER_REPLAY_TIME_LIMIT."""
    from operations.connectors.stdio import stdio_servers

    settings.LEDGER_REPLAY_TIME_LIMIT = 3
    tool = stdio_tool(acme, "wait_forever", "hang", timeout_ms=120_000)
    with stdio_servers():
        result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
        [pid] = started(pid_file)
        assert not alive(pid)
    assert (result.ok, result.status) == (False, "transient")
    assert result.latency_ms < 60_000


def test_an_allowlisted_program_that_is_not_installed_is_refused_without_a_retry(
        acme, allowlist, settings):
    settings.LEDGER_MCP_STDIO_COMMANDS = {**allowlist, "gone": ["no-such-mcp-server"]}
    tool = stdio_tool(acme, "anything", "gone")
    result = connector_for(tool).call({}, idempotency_key=None, dry_run=False)
    assert (result.ok, result.status) == (False, "failed")
    assert "'no-such-mcp-server' is not found on PATH" in result.error


@pytest.mark.parametrize(("value", "says"), [
    (["mcp-server-time"], "is a JSON object"),
    ({"Time Server": ["x"]}, "is not a server name"),
    ({"time": "mcp-server-time --local-timezone UTC"}, "argv list or an object"),
    ({"time": []}, "argv is a non-empty list of strings"),
    ({"time": {"argv": ["x"], "secret_env": "PATH"}}, "secret_env is an environment variable"),
    ({"time": {"argv": ["x"], "env": {"HOME": "/root"}}}, "env maps variable names"),
    ({"time": {"argv": ["x"], "shell": True}}, "argv list or an object"),
])
def test_a_malformed_allowlist_stops_the_process_naming_what_is_wrong(value, says):
    from django.core.exceptions import ImproperlyConfigured

    from core.mcp_stdio import parse_stdio_commands

    with pytest.raises(ImproperlyConfigured, match="LEDGER_MCP_STDIO_COMMANDS") as caught:
        parse_stdio_commands(value)
    assert says in str(caught.value)


def test_a_folder_left_by_a_worker_killed_outright_is_swept_once_no_server_can_use_it(
        acme, allowlist, settings):
    settings.LEDGER_REPLAY_TIME_LIMIT = 600
    left = Path(tempfile.mkdtemp(prefix="ledger-mcp-hang-"))
    (left / "stderr").write_text("what the server said")
    recent = Path(tempfile.mkdtemp(prefix="ledger-mcp-hang-"))  # a server still running
    long_ago = time.time() - 700
    os.utime(left, (long_ago, long_ago))
    try:
        tool = stdio_tool(acme, "convert_time", "time")
        assert connector_for(tool).call(CONVERT_ARGS, idempotency_key=None,
                                        dry_run=False).ok
        assert not left.exists()
        assert recent.exists()
    finally:
        shutil.rmtree(recent, ignore_errors=True)
