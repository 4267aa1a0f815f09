"""The client is a distribution of its own (client/, ``ledger-portal-client``): its wheel,
built here without the network, installs into a virtual environment that holds nothing else (no
Django, nothing of the portal, no index to fetch a dependency from) and records a run into a
live portal from there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from core.models import Tenant
from runs.integrity import verify_tenant
from runs.models import Run, ToolCall

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 180  # each step (wheel, venv, pip); a loaded two-core machine takes a few seconds

AGENT = """
import sys
import ledger_client
from ledger_client import LedgerClient

print(ledger_client.__file__)
client = LedgerClient(flush_interval=3600, close_at_exit=False)
with client.run(agent_id="standalone-bot", goal="record from a venv of its own",
                run_id=sys.argv[1]) as run:
    with run.tool_call("lookup", action_class="read", input={"ticket": "T-9"}) as call:
        call.output = {"found": True}
delivered = client.flush(timeout=60)
client.close(timeout=5)
sys.exit(0 if delivered else f"not delivered: {client.stats()}")
"""

UNAVAILABLE = """
import importlib
for name in ("django", "rest_framework", "celery", "ledger_portal", "runs", "policies"):
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        continue
    print(name)
"""


def offline_env(**extra: str) -> dict[str, str]:
    """This environment, less pip's configuration (its indexes, find-links) and Python's
    search path: pip finds nothing but what it is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")
           and k not in {"PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV"}}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               **extra)
    return env


def run(command: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, env=offline_env(**extra), capture_output=True,
                            text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def build_wheel(tmp_path: Path) -> Path:
    """From a copy of client/, so the build leaves nothing in the checkout."""
    assert int(version("setuptools").split(".")[0]) >= 77, (
        "the client builds with setuptools>=77, a dev dependency: make install")
    source = tmp_path / "client"
    shutil.copytree(ROOT / "client", source, ignore=shutil.ignore_patterns(
        "build", "dist", "*.egg-info", "__pycache__"))
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", str(source), "-w", str(wheels)], cwd=tmp_path)
    [wheel] = wheels.glob("*.whl")
    return wheel


def test_the_client_wheel_alone_records_into_a_live_portal(
        live_server: Any, agent_key: str, acme: Tenant, tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    assert wheel.name == "ledger_portal_client-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read("ledger_portal_client-0.1.0.dist-info/METADATA").decode()
    assert {name.split("/")[0] for name in names} == {
        "ledger_client", "ledger_portal_client-0.1.0.dist-info"}
    assert "ledger_client/py.typed" in names
    assert "Requires-Dist" not in metadata
    assert "License-Expression: Apache-2.0" in metadata

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    python = str(venv / "bin" / "python")
    run([python, "-m", "pip", "install", "--no-index", str(wheel)], cwd=tmp_path)

    installed = json.loads(run([python, "-m", "pip", "list", "--format=json"],
                               cwd=tmp_path).stdout)
    names_installed = {package["name"].lower() for package in installed}
    assert names_installed - {"pip", "setuptools", "wheel"} == {"ledger-portal-client"}
    # Neither Django nor the portal is there to import (-I: not from the working directory,
    # PYTHONPATH or the user's site-packages either).
    assert run([python, "-I", "-c", UNAVAILABLE], cwd=tmp_path).stdout.split() == []

    agent = run([python, "-I", "-c", AGENT, "standalone-run"], cwd=tmp_path,
                LEDGER_URL=live_server.url, LEDGER_API_KEY=agent_key,
                LEDGER_DEAD_LETTER_FILE=str(tmp_path / "dead-letter.jsonl"))
    assert agent.stdout.split()[0].startswith(str(venv))  # the installed copy, not the source

    stored = Run.objects.get(run_id="standalone-run")
    assert (stored.status, stored.agent.agent_id, stored.goal) == (
        "succeeded", "standalone-bot", "record from a venv of its own")
    [call] = ToolCall.objects.filter(run=stored)
    assert (call.tool.name, call.action_class, call.status) == ("lookup", "read", "succeeded")
    assert not (tmp_path / "dead-letter.jsonl").exists()
    assert verify_tenant(acme).intact
