"""The long-lived heap of a server process, kept out of the garbage collector's way.

Django, its apps and our modules leave a few hundred thousand objects that live as long as
the process. Python's cyclic collector re-walks all of them on every full collection, and a
request that builds many containers (the timeline of a 2,000-record run) triggers several:
bench/timeline_page.py measured full collections at 13% of that page's time. ``gc.freeze()``
after start-up moves them to a permanent generation the collector never walks; what requests
allocate is collected as before (cycles included), so nothing is kept that would have been
freed. CPython's documentation recommends this for pre-fork servers; it is per process, so each
gunicorn worker and Celery child freezes its own start-up heap.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

from django.http import HttpRequest
from django.http.response import HttpResponseBase


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then freeze what survives; returns how many
    objects are frozen. Call once per process, when its apps are loaded and before it serves."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class CollectorPausedDuringRequest:
    """Middleware (first of all): the cyclic collector does not run while a request is
    handled; it runs again, as usual, once the response is made.

    With the start-up heap frozen, collections during a request only walk what the request
    built, but they walk it all: every container a page builds stays alive until its response
    is rendered, so each is traversed (and promoted, and traversed again) however often
    collections run. The 2,000-record timeline page spent 14 ms of ~200 in them, run detail
    11 ms of ~70 (bench.timeline_page, bench.run_detail print the collector's time). Garbage a
    request makes is freed by reference counting as before; the cycles it makes wait for the
    first collection after it, so memory is bounded by one request's cycles. The collector is
    per process: with threaded workers a request that finds it paused by another leaves it
    alone, and it runs again when the request that paused it ends."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not gc.isenabled():
            return self.get_response(request)
        gc.disable()
        try:
            return self.get_response(request)
        finally:
            gc.enable()
