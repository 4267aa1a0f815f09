"""PostgreSQL restarted under agents recording their runs: a real portal process (its own
database cluster, stopped and started by the test) answers every batch POSTed meanwhile with a
JSON 503 and ``Retry-After``, never an HTML page or a 500; nothing of a refused batch is
written, everything accepted is there, and once the database is back batches land again. An
export a restart cut in the middle does not stay "running": the watchdog queues it again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runs.annotations import GOVERNANCE_RUN_ID

from .conftest import ROOT, OwnPostgres, Worker, _free_port, wait_for

SETUP = """
from core.models import Tenant
from core.services import issue_api_key
tenant = Tenant.objects.create(slug="acme", name="Acme")
print(issue_api_key(tenant, "agent", ["ingest", "view_ledger"])[1])
"""


class Portal:
    """The web process as deployed (``deploy/entrypoint.sh web``: gunicorn, DEBUG off) on the
    test's own cluster."""

    def __init__(self, postgres: OwnPostgres, data: Path) -> None:
        self.port = _free_port()
        self.env = {**os.environ, "DATABASE_URL": postgres.url("ledger"),
                    "LEDGER_DATA_DIR": str(data), "LEDGER_HTTPS": "0", "DEBUG": "0",
                    "SECRET_KEY": "test-" + "k" * 60, "DB_CONN_MAX_AGE": "60",
                    "LEDGER_BIN": str(Path(sys.executable).parent),
                    "LEDGER_BIND": f"127.0.0.1:{self.port}", "WEB_CONCURRENCY": "2"}
        self.env.pop("REDIS_URL", None)
        self.log = data / "portal.log"
        self.process: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str) -> str:
        return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=self.env,
                              check=True, capture_output=True, text=True, timeout=300).stdout

    def serve(self) -> None:
        with self.log.open("w") as out:
            self.process = subprocess.Popen(
                [str(ROOT / "deploy" / "entrypoint.sh"), "web"], cwd=ROOT, env=self.env,
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/", timeout=2)
                return
            except urllib.error.HTTPError:
                return  # it answers
            except OSError:
                assert time.monotonic() < deadline, self.log.read_text()[-3000:]
                time.sleep(0.2)

    def health(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz",
                                        timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as refused:
            return refused.code

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(20)


@pytest.fixture
def portal(own_postgres: OwnPostgres, tmp_path: Path) -> Iterator[Portal]:
    with psycopg.connect(own_postgres.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ledger")
    portal = Portal(own_postgres, tmp_path)
    portal.manage("migrate", "--no-input", "-v0")
    portal.key = portal.manage("shell", "-c", SETUP).strip().splitlines()[-1]  # type: ignore[attr-defined]
    portal.serve()
    try:
        yield portal
    finally:
        portal.stop()


def post_batch(portal: Any, run: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{portal.port}/api/v1/batches/", method="POST",
        data=json.dumps({"runs": [run]}).encode(),
        headers={"Authorization": f"Bearer {portal.key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


def test_batches_during_a_postgres_restart_get_a_json_503_and_nothing_half_written(
        portal, own_postgres, make_run):
    accepted, refused = [], []

    def send(phase: str) -> int:
        run = make_run()
        status, headers, body = post_batch(portal, run)
        assert headers.get("Content-Type", "").startswith("application/json"), (phase, body)
        if status == 201:
            accepted.append(run["run_id"])
        else:
            assert status == 503, (phase, status, body[:500])
            assert int(headers["Retry-After"]) > 0
            assert "unavailable" in json.loads(body)["detail"]
            refused.append(run["run_id"])
        return status

    assert [send("before") for _ in range(3)] == [201] * 3
    assert portal.health() == 200
    own_postgres.stop()
    assert [send("down") for _ in range(5)] == [503] * 5
    assert portal.health() == 503  # a load balancer sends agents to a process that can serve
    own_postgres.start()
    deadline = time.monotonic() + 30  # the portal's connections find the database again
    while send("after") != 201:
        assert time.monotonic() < deadline, "batches were still refused 30 s after the restart"
        time.sleep(0.5)
    assert [send("after") for _ in range(3)] == [201] * 3
    assert portal.health() == 200

    with psycopg.connect(own_postgres.url("ledger")) as conn:
        stored = {r for (r,) in conn.execute("SELECT run_id FROM runs_run")} - {
            GOVERNANCE_RUN_ID}  # the tenant's governance log (the key's issue is on it)
        orphans = conn.execute("SELECT count(*) FROM runs_toolcall t LEFT JOIN runs_run r "
                               "ON r.id = t.run_id WHERE r.id IS NULL").fetchone()
    assert stored == set(accepted)  # every accepted run, and nothing of a refused one
    assert not stored & set(refused)
    assert orphans == (0,)
    assert len(refused) >= 5


REQUEST_EXPORT = """
from datetime import UTC, datetime
from django.contrib.auth.models import User
from core.models import Tenant
from core.services import grant_role
from exports.services import request_export
tenant = Tenant.objects.get(slug="acme")
auditor = User.objects.create_user("auditor")
grant_role(auditor, "export", tenant)
print(request_export(tenant, datetime(2000, 1, 1, tzinfo=UTC),
                     datetime(2100, 1, 1, tzinfo=UTC), by=auditor).pk)
"""


def export_row(postgres: OwnPostgres, pk: int) -> tuple[str, int, int, str] | None:
    try:
        with psycopg.connect(postgres.url("ledger"), connect_timeout=2) as conn:
            return conn.execute("SELECT status, rows_done, stalls, error FROM "
                                "exports_auditexport WHERE id = %s", [pk]).fetchone()
    except psycopg.OperationalError:
        return None  # the database is down


def test_an_export_cut_by_a_postgres_restart_is_picked_up_by_the_watchdog(
        portal, own_postgres, own_redis, make_run, tmp_path):
    for _ in range(120):
        assert post_batch(portal, make_run())[0] == 201
    portal.env["REDIS_URL"] = own_redis.url
    export_id = int(portal.manage("shell", "-c", REQUEST_EXPORT).strip().splitlines()[-1])
    worker = Worker(own_redis.url, tmp_path / "worker.log", "--beat", "--schedule",
                    str(tmp_path / "beat-schedule"), DATABASE_URL=portal.env["DATABASE_URL"],
                    LEDGER_DATA_DIR=portal.env["LEDGER_DATA_DIR"], SECRET_KEY=portal.env[
                        "SECRET_KEY"], LEDGER_EXPORT_PART_ROWS="2000",
                    LEDGER_EXPORT_PROGRESS_ROWS="5", LEDGER_JOB_STALL_SECONDS="5",
                    LEDGER_WATCHDOG_INTERVAL="2").start()
    progress: list[int] = []
    try:
        def writing() -> bool:
            row = export_row(own_postgres, export_id)
            progress.append(row[1] if row else -1)
            return row is not None and row[0] == "running" and row[1] > 0
        wait_for("the export being written", writing, worker=worker, every=0.005)
        own_postgres.stop()  # mid-part: the worker's connection goes away under it
        time.sleep(1)
        own_postgres.start()

        def finished() -> tuple[str, int, int, str] | None:
            row = export_row(own_postgres, export_id)
            if row is not None:
                progress.append(row[1])
            return row if row is not None and row[0] in ("done", "failed") else None
        status, _, stalls, error = wait_for("the export finishing", finished,
                                                    seconds=120, worker=worker)
    finally:
        worker.stop()
    assert status == "done", error
    assert stalls >= 1  # the watchdog found it stalled and queued it again
    seen = [p for p in progress if p >= 0]
    assert seen == sorted(seen), "the progress went backwards"
