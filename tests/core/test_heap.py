"""A server process freezes its start-up heap, so the collector does not re-walk Django on
every full collection of a request, and the collector does not run while a request is handled
(core/heap.py)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.http import HttpRequest, HttpResponse
from django.urls import path

from core.heap import CollectorPausedDuringRequest

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


# -- no cyclic collection while a request is handled (core.heap.CollectorPausedDuringRequest) --

SEEN: list[bool] = []


def _collector_seen_by_the_view(request: HttpRequest) -> HttpResponse:
    SEEN.append(gc.isenabled())
    return HttpResponse("ok")


urlpatterns = [path("collector-probe/", _collector_seen_by_the_view)]


@pytest.mark.django_db
def test_no_cyclic_collection_runs_while_a_request_is_handled(client, settings) -> None:
    settings.ROOT_URLCONF = __name__
    SEEN.clear()
    assert gc.isenabled()
    assert client.get("/collector-probe/").status_code == 200
    assert SEEN == [False], "the collector ran free during the request"
    assert gc.isenabled(), "the collector must run again once the response is made"


def test_a_request_finding_the_collector_paused_by_another_leaves_it_to_that_one() -> None:
    # threaded workers: the request that paused the collector turns it back on
    pause = CollectorPausedDuringRequest(lambda request: HttpResponse("ok"))
    gc.disable()
    try:
        pause(HttpRequest())
        assert not gc.isenabled()
    finally:
        gc.enable()
    pause(HttpRequest())
    assert gc.isenabled()


def test_the_collector_runs_again_when_the_view_raises() -> None:
    def broken(request: HttpRequest) -> HttpResponse:
        raise RuntimeError("the view failed")

    with pytest.raises(RuntimeError):
        CollectorPausedDuringRequest(broken)(HttpRequest())
    assert gc.isenabled()


def test_a_ledger_command_process_freezes_its_start_up_heap(tmp_path: Path) -> None:
    env = {**os.environ, "LEDGER_DATA_DIR": str(tmp_path)}
    probe = ("import gc; from ledger_portal.cli import _setup; _setup(); "
             "print(gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    assert int(out.split()[-1]) > 10_000


def test_the_command_run_in_a_process_already_set_up_leaves_its_heap_alone() -> None:
    from ledger_portal.cli import _setup

    before = gc.get_freeze_count()
    _setup()  # tests and benchmarks call the CLI in process: their heap is theirs
    # frozen objects may be freed meanwhile (the count drops); a freeze would add this
    # process's whole heap
    assert gc.get_freeze_count() <= before
