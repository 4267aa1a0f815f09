"""Faults are made for real: a Redis of the test's own (its own port and process), stopped and
started by the test, and real Celery workers killed with signals; the machine's shared services
are never touched."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu.pools
import pytest
from django.conf import settings
from django.db import connection

from ledger_portal import celery_app
from tests.celery_conf import set_celery
from tests.exports.conftest import export_dirs  # noqa: F401 (a fixture the fault tests use)
from tests.replay.toolservers import ToolServer, http_tool_server

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """``persistent``: every write is on disk before it is answered (append-only file, fsync
    always), so a killed and restarted Redis comes back with its queues, as a production
    Redis with AOF does."""

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        self.port = _free_port()
        self.directory = directory
        self.persistent = persistent
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "always",
             "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def _own_redis(directory: Path, persistent: bool) -> Iterator[OwnRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    redis = OwnRedis(directory, persistent)
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def tool_server() -> Iterator[ToolServer]:
    """A loopback HTTP server standing in for the agents' tools."""
    with http_tool_server() as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    yield from _own_redis(tmp_path, persistent=False)


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    yield from _own_redis(tmp_path, persistent=True)


class OwnPostgres:
    """A PostgreSQL cluster of the test's own (initdb into a fresh folder, its own port), run
    as the ``postgres`` system user, stopped and started by the test."""

    def __init__(self) -> None:
        bindir = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
        if bindir is None or shutil.which("runuser") is None or os.geteuid() != 0:
            pytest.skip("needs PostgreSQL's server binaries and root to run them as postgres")
        self.bindir = bindir
        self.port = _free_port()
        # under /tmp itself: pytest's folders are closed to other users
        self.directory = Path(tempfile.mkdtemp(prefix="ledger-pg-", dir="/tmp"))
        shutil.chown(self.directory, "postgres", "postgres")
        self._as_postgres("initdb", "-D", str(self.directory / "data"), "-A", "trust",
                          "-U", "postgres", "--no-sync", "-E", "UTF8")

    def _as_postgres(self, program: str, *args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(self.bindir / program), *args],
                       check=True, capture_output=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.directory / "data"), "-w", "-l",
                          str(self.directory / "log"), "-o",
                          f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                          "-c fsync=off", "start")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.directory / "data"), "-w", "-m", "fast",
                          "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class OwnReplica:
    """A streaming replica of the test's own cluster, made as an operator makes one:
    ``pg_basebackup -R -X stream`` over loopback (``initdb`` allows replication connections
    from 127.0.0.1), then started as a hot standby on a port of its own."""

    def __init__(self, primary: OwnPostgres) -> None:
        self.primary = primary
        self.port = _free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="ledger-replica-", dir="/tmp"))
        shutil.chown(self.directory, "postgres", "postgres")
        primary._as_postgres("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port),
                             "-U", "postgres", "-D", str(self.directory / "data"), "-R",
                             "-X", "stream", "-c", "fast", "--no-sync")

    def url(self, database: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        # pg_ctl -w returns once the standby accepts read-only connections
        self.primary._as_postgres(
            "pg_ctl", "-D", str(self.directory / "data"), "-w", "-t", "60", "-l",
            str(self.directory / "log"), "-o",
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start")

    def stop(self) -> None:
        self.primary._as_postgres("pg_ctl", "-D", str(self.directory / "data"), "-w", "-m",
                                  "fast", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    postgres = OwnPostgres()
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.remove()


def use_broker(url: str, options: Any) -> None:
    """Point this process's Celery at another broker (connections and producers to the old
    one are dropped)."""
    set_celery(broker_url=url, broker_transport_options=options)
    celery_app._pool = None
    celery_app.amqp._producer_pool = None
    kombu.pools.reset()  # kombu's process-wide pools may still hold the old broker's


@contextmanager
def broker_at(url: str) -> Iterator[None]:
    before = (celery_app.conf.broker_url, celery_app.conf.broker_transport_options)
    use_broker(url, {})
    try:
        yield
    finally:
        use_broker(*before)


class Worker:
    """A real Celery worker (prefork, one pool process) in its own process, on the test's
    database and the given broker; its log is kept for the assertion messages."""

    def __init__(self, broker_url: str, log: Path, *extra: str, **env: str) -> None:
        db = connection.settings_dict
        self.log = log
        self.env = {**os.environ,
                    "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:"
                                    f"{db['PORT'] or 5432}/{db['NAME']}",
                    "REDIS_URL": broker_url, "LEDGER_DATA_DIR": str(settings.DATA_DIR),
                    "LEDGER_EGRESS_ALLOW": "127.0.0.1,localhost", **env}
        self.args = [sys.executable, "-m", "celery", "-A", "ledger_portal", "worker",
                     "-Q", "celery", "--pool", "prefork", "--concurrency", "1",
                     "--loglevel", "INFO", "--without-heartbeat", "--without-gossip",
                     "--without-mingle", *extra]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        # its own process group: kill_all() is the whole worker dying (parent and pool)
        with self.log.open("a") as out:
            self.process = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=out,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill_all(self) -> None:
        """SIGKILL to the parent and its pool at once: nothing acknowledges or hands back."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def wait_for(what: str, check: Callable[[], Any], seconds: float = 60,
             worker: Worker | None = None, every: float = 0.2) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"{what} did not happen within {seconds} s"
            + (f"; the worker said:\n{worker.output()}" if worker else ""))
        time.sleep(every)
