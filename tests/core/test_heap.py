"""A server process freezes its start-up heap, so the collector does not re-walk Django on
every full collection of a request (core/heap.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_PROBE = """
import gc, weakref
import ledger_portal.wsgi
frozen = gc.get_freeze_count()
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a          # a cycle made after start-up, as a request would
gone = weakref.ref(a)
del a, b
gc.collect()
print(frozen, gone() is None)
"""


def test_the_web_process_freezes_its_start_up_heap_and_still_collects_request_garbage(
        tmp_path: Path) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "ledger_portal.settings",
           "LEDGER_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    frozen, collected = int(out[0]), out[1] == "True"
    assert frozen > 10_000, "Django's start-up heap is left for every full collection to walk"
    assert collected, "a cycle made after the freeze must still be collected"
