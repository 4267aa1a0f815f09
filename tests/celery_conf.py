"""Changing Celery's configuration in a test.

The app is configured from Django settings (namespace ``CELERY``); Celery 5.6 reads a key's
namespaced name (``CELERY_TASK_ALWAYS_EAGER``) before the plain one, so a change is made under
both or it does not take."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ledger_portal import celery_app

_MISSING = object()


def set_celery(**changes: Any) -> None:
    for key, value in changes.items():
        celery_app.conf[key] = celery_app.conf[f"CELERY_{key.upper()}"] = value


@contextmanager
def celery_conf(**changes: Any) -> Iterator[None]:
    before = {key: celery_app.conf.get(key) for key in changes}
    set_celery(**changes)
    try:
        yield
    finally:
        set_celery(**before)


def worker_env(**variables: str) -> dict[str, str]:
    """The environment of a real Celery worker process a test starts: this test's database
    (the test database pytest-django made), plus ``variables``."""
    import os

    from django.db import connection

    db = connection.settings_dict
    return {**os.environ,
            "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
                            f"{db['PORT'] or 5432}/{db['NAME']}", **variables}


@contextmanager
def prefork_worker_process(env: dict[str, str], log_path: Any, pool: str = "prefork",
                           queues: str = "celery") -> Iterator[Any]:
    """A real Celery worker with one prefork pool process (killing that child is "the worker
    died mid-task": the parent sees it and starts another), or with ``pool="solo"`` none,
    taking ``queues`` and logging to ``log_path``; stopped (terminated, then killed) however
    the test ends."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "ledger_portal", "worker", "-Q", queues,
             "--pool", pool, "--concurrency", "1", "--loglevel", "WARNING",
             "--without-heartbeat", "--without-gossip", "--without-mingle"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
