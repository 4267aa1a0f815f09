"""Stdio MCP servers on a real Celery worker (prefork, Redis, PostgreSQL): a sandbox replay
starts the real ``mcp-server-time`` from the operator's allowlist and stops it when it ends;
a worker process killed outright while a server serves it leaves no server behind (the kernel
kills the server with the thread that started it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from operations.models import Replay, ReplayStep
from operations.replay import start_replay
from tests.celery_conf import prefork_worker_process, worker_env
from tests.integration.test_replay_worker import finished, wait_for
from tests.replay.scenario import allow_everything, approve, stored_run
from tests.replay.test_mcp_stdio import SERVERS, TIME_SERVER, env_run, stdio_tool, time_run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def running(pid: int) -> bool:
    """Still running: a killed server whose parent died may linger as a zombie until init
    reaps it, and is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture
def pid_file(tmp_path: Path) -> Path:
    path = tmp_path / "server-pids"
    path.touch()
    return path


@pytest.fixture
def worker_with_servers(tmp_path: Path, pid_file: Path, settings: Any
                        ) -> Iterator[subprocess.Popen[bytes]]:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    commands = {"time": [str(TIME_SERVER), "--local-timezone", "UTC"],
                "hang": [sys.executable, str(SERVERS), "hang", str(pid_file)]}
    settings.LEDGER_MCP_STDIO_COMMANDS = commands  # this process validates tools with it
    env = worker_env(LEDGER_DATA_DIR=str(settings.DATA_DIR), LEDGER_REPLAY_APPROVAL_POLL="1",
                     LEDGER_MCP_STDIO_COMMANDS=json.dumps(commands),
                     TMPDIR=str(tmp_path))  # the folder a killed worker leaves stays here
    with prefork_worker_process(env, tmp_path / "worker.log") as process:
        yield process


def test_a_sandbox_replay_on_a_real_worker_drives_the_time_server(
        worker_with_servers, acme, alice, record):
    record(acme, time_run("run-time-worker"))
    stdio_tool(acme, "convert_time", "time", dry_run_via="flag", dry_run_name="dry_run",
               volatile_fields=["datetime", "day_of_week", "is_dst"])
    replay = finished(start_replay(stored_run(acme, "run-time-worker"), by=alice))
    assert replay.status == "succeeded", replay.failure_reason
    assert replay.divergent_steps == 0
    assert set(ReplayStep.objects.filter(replay=replay).values_list(
        "mode_used", "status")) == {("dry_run", "succeeded")}


def test_a_worker_killed_while_its_server_hangs_leaves_no_server_behind(
        worker_with_servers, acme, alice, record, pid_file):
    assert settings.REDIS_URL
    record(acme, env_run("run-hang-worker", calls=1, tool="wait_forever"))
    stdio_tool(acme, "wait_forever", "hang", timeout_ms=120_000)
    allow_everything(acme)
    replay = start_replay(stored_run(acme, "run-hang-worker"), by=alice, mode="live")
    approve(replay.approval)
    [server] = wait_for("the server starting", lambda: [
        int(line) for line in pid_file.read_text().split()])
    wait_for("the call going out", lambda: ReplayStep.objects.filter(
        replay=replay, status="attempting").exists())
    worker_pid = int(Replay.objects.get(pk=replay.pk).worker.rpartition(":")[2])
    assert running(server)
    os.kill(worker_pid, signal.SIGKILL)
    wait_for("the server dying with its worker", lambda: not running(server), seconds=10)
    # The message comes back; the call was in flight and the tool does not honour
    # idempotency keys, so it is not sent again: the replay fails with the reason.
    done = finished(replay)
    assert done.status == "failed"
    assert "does not honour idempotency keys" in done.failure_reason
    assert [int(line) for line in pid_file.read_text().split()] == [server]
