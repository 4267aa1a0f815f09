"""The client is for agents: it imports without Django, Celery or any portal module, even where
they are installed (here, the portal's own environment; test_standalone_distribution.py runs
it where they are not)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHECK = """
import os, sys
import ledger_client
from ledger_client import LedgerClient
LedgerClient("http://127.0.0.1:9", "lpk_x_y", close_at_exit=False).close(timeout=0)
foreign = sorted(m for m in sys.modules
                 if m.split(".")[0] in {"django", "rest_framework", "celery", "kombu",
                                        "pydantic", "orjson", "ledger_portal", "runs",
                                        "policies", "approvals", "operations", "incidents",
                                        "exports"})
print(repr(foreign), os.environ.get("DJANGO_SETTINGS_MODULE"))
"""


def test_the_client_imports_without_django_or_any_portal_module() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    # run from the checkout's root, where every portal package could be imported
    result = subprocess.run([sys.executable, "-c", CHECK], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[] None"
