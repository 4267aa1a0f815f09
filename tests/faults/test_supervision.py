"""The systemd units we ship bring a dead worker back: they parse (``systemd-analyze verify``),
restart always, and their command lines, run from this checkout, start a worker and a beat."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path
from typing import Any

import pytest

from .conftest import ROOT

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
INSTALLED_AT = "/opt/ledger-portal"


def unit(path: Path) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def here(text: str) -> str:
    """The unit's text as installed from this checkout."""
    return text.replace(INSTALLED_AT + "/.venv/bin/celery", str(Path(sys.executable).parent
                                                                / "celery")).replace(
        INSTALLED_AT, str(ROOT))


def test_there_is_a_unit_for_the_worker_and_one_for_beat():
    assert [p.name for p in UNITS] == ["ledger-portal-beat.service",
                                       "ledger-portal-worker.service"]


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_a_unit_restarts_always_and_parses(path: Path, tmp_path: Path):
    service = unit(path)["Service"]
    assert service["Restart"] == "always"
    assert int(service["RestartSec"]) <= 10
    # the process may write only there: its data folder must be there
    assert service["Environment"] == f"LEDGER_DATA_DIR={service['ReadWritePaths']}"
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    copy = tmp_path / path.name
    copy.write_text(here(path.read_text()).replace("/etc/ledger-portal/env",
                                                   str(tmp_path / "env")))
    (tmp_path / "env").write_text("")
    checked = subprocess.run(["systemd-analyze", "verify", "--man=no", str(copy)],
                             capture_output=True, text=True, timeout=60)
    problems = [line for line in (checked.stdout + checked.stderr).splitlines()
                if path.name in line]
    assert checked.returncode == 0, checked.stderr
    assert problems == [], checked.stderr


@pytest.mark.parametrize(("path", "ready"), [
    (ROOT / "deploy/systemd/ledger-portal-worker.service", "ready."),
    (ROOT / "deploy/systemd/ledger-portal-beat.service", "beat: Starting"),
], ids=["worker", "beat"])
def test_the_unit_command_starts_from_this_checkout(path: Path, ready: str, own_redis: Any,
                                                    tmp_path: Path):
    command = shlex.split(here(unit(path)["Service"]["ExecStart"]).replace(
        "/var/lib/ledger-portal", str(tmp_path)))
    env = {**os.environ, "REDIS_URL": own_redis.url, "LEDGER_DATA_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)  # the embedded default is enough to start
    log = tmp_path / "out.log"
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while ready not in log.read_text():
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(30)
