"""The long-lived heap of a server process, kept out of the garbage collector's way.

Django, its apps and our modules leave a few hundred thousand objects that live as long as
the process. Python's cyclic collector re-walks all of them on every full collection, and a
request that builds many containers (the timeline of a 2,000-record run) triggers several:
bench/timeline_page.py measured full collections at 13% of that page's time. ``gc.freeze()``
after start-up moves them to a permanent generation the collector never walks; what requests
allocate is collected as before (cycles included), so nothing is kept that would have been
freed. CPython's documentation recommends this for pre-fork servers; it is per process, so each
gunicorn worker and Celery child freezes its own start-up heap.

What a request allocates is then collected less often: CPython runs a young collection every
700 container allocations, and the timeline page of a 2,000-record run, which builds some
200,000 short-lived containers, ran ~55 young and ~5 middle collections per request (17 ms of a
200 ms page; bench/timeline_page.py prints the collector's time). Most of those containers die
by reference counting before any collection sees them; a young generation of
``YOUNG_COLLECTION_THRESHOLD`` lets them, at the cost of at most that many live containers
waiting for their cycle to be found.
"""

from __future__ import annotations

import gc

#: Container allocations (net of deallocations) between two young collections; CPython's is 700.
YOUNG_COLLECTION_THRESHOLD = 20_000


def prepare_heap_for_serving() -> int:
    """Collect what start-up left as garbage, freeze what survives and collect the young
    generation less often; returns how many objects are frozen. Call once per process, when
    its apps are loaded and before it serves."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
    return gc.get_freeze_count()
