"""Work shared among fresh processes on this machine (``ledger verify``, ``ledger export``):
each is a spawned interpreter that sets Django up on the caller's database, with the caller's
values of the settings the work reads.

Spawned, not forked: a forked child would share the parent's database connection and whatever
threads it holds. Spawning costs each process its Django start-up (1.5-2.7 s on the 2-core
benchmark machine), so callers choose the count by the size of the work.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

from django.conf import settings
from django.db import connection

#: At most this many processes, whatever the cores: each holds a database connection.
MOST_PROCESSES = 4


def _start(database: str, overrides: dict[str, Any],
           then: Callable[..., None] | None, args: tuple[Any, ...]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
    import django

    django.setup()
    # The same database as the parent's connection (under tests, the test database), and the
    # parent's settings where they differ from the environment's (a test's temporary
    # storage): set before anything reads them (storages are built on first use).
    connection.settings_dict["NAME"] = database
    for name, value in overrides.items():
        setattr(settings, name, value)
    if then is not None:
        then(*args)


def django_pool(workers: int, settings_names: tuple[str, ...] = (),
                then: Callable[..., None] | None = None, args: tuple[Any, ...] = ()
                ) -> ProcessPoolExecutor:
    """``workers`` fresh processes set up as this one is: its database, its values of
    ``settings_names``; each then calls ``then(*args)`` (a module-level function)."""
    overrides = {name: getattr(settings, name) for name in settings_names}
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start,
                               initargs=(connection.settings_dict["NAME"], overrides, then,
                                         args))


def choose_processes(size: int, cpus: int, threshold: int, most: int = MOST_PROCESSES) -> int:
    """How many processes share work of ``size`` units: one below ``threshold``, then one more
    per further ``threshold`` (each must save more than its start-up), never more than
    ``cpus`` or ``most`` (at most :data:`MOST_PROCESSES`)."""
    if size < threshold:
        return 1
    return max(1, min(cpus, most, MOST_PROCESSES, 1 + size // threshold))


def finished_in_order(futures: list[Future[Any]]) -> Iterator[int]:
    """Each future's position once it and every one before it have finished; the first
    exception any of them raises, as soon as it is raised (not once those before it end)."""
    running = set(futures)
    for position, future in enumerate(futures):
        while not future.done():
            finished, running = wait(running, return_when=FIRST_COMPLETED)
            for other in finished:
                other.result()
        future.result()
        yield position
