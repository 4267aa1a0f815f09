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


def freeze_startup_heap() -> int:
    """Collect what start-up left as garbage, then freeze what survives; returns how many
    objects are frozen. Call once per process, when its apps are loaded and before it serves."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
