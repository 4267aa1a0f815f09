"""An agent process that simply exits still delivers what it recorded (atexit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.models import Tenant
from runs.integrity import verify_tenant
from runs.models import Run, ToolCall

ROOT = Path(__file__).resolve().parents[2]

AGENT = """
import os
from ledger_client import LedgerClient

# Nothing would leave before a whole hour: only the exit flush can deliver.
client = LedgerClient(flush_interval=3600, shutdown_timeout=20)
with client.run(agent_id="exit-bot", goal="record and exit", run_id=os.environ["RUN_ID"]) as run:
    for i in range(5):
        with run.tool_call("lookup", action_class="read", input={"i": i}) as call:
            call.output = i
    if os.environ.get("CRASH"):
        raise RuntimeError("the agent crashed")
left_open = client.run(agent_id="exit-bot", goal="never ended",
                       run_id=os.environ["RUN_ID"] + "-open")
"""


def run_agent(url: str, key: str, run_id: str, crash: bool = False
              ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.update(LEDGER_URL=url, LEDGER_API_KEY=key, RUN_ID=run_id)
    if crash:
        env["CRASH"] = "1"
    return subprocess.run([sys.executable, "-c", AGENT], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)


def test_records_are_flushed_when_the_agent_exits(live_server: Any, agent_key: str,
                                                  acme: Tenant) -> None:
    result = run_agent(live_server.url, agent_key, "exit-run")
    assert result.returncode == 0, result.stderr
    stored = Run.objects.get(run_id="exit-run")
    assert stored.status == "succeeded"
    assert ToolCall.objects.filter(run=stored).count() == 5
    # a run still open at exit is ended as cancelled: whatever ran it is gone
    assert Run.objects.get(run_id="exit-run-open").status == "cancelled"
    assert verify_tenant(acme).intact


def test_an_agent_that_crashes_records_its_run_as_failed(live_server: Any, agent_key: str,
                                                         acme: Tenant) -> None:
    result = run_agent(live_server.url, agent_key, "crash-run", crash=True)
    assert result.returncode == 1
    assert "the agent crashed" in result.stderr
    stored = Run.objects.get(run_id="crash-run")
    assert stored.status == "failed"
    assert ToolCall.objects.filter(run=stored).count() == 5
