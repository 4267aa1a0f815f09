"""A real streaming replica under a real portal: the test's own PostgreSQL cluster, a replica of
it made with ``pg_basebackup -R -X stream`` and started as a hot standby, and the portal as
deployed (gunicorn) with ``DATABASE_URL`` on the primary and ``DATABASE_REPLICA_URL`` on the
replica.

Which server answered is proven by pausing the replica's replay (``pg_wal_replay_pause()``):
a run recorded afterwards is on the primary only, so a page that lists it read the primary and
a page that does not read the replica."""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runs.sample_runs import RunGenerator

from .conftest import OwnPostgres, OwnReplica, wait_for
from .test_postgres_restart import Portal

pytestmark = pytest.mark.postgres

SETUP = """
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from core.models import Tenant
from core.services import issue_api_key
tenant = Tenant.objects.create(slug="acme", name="Acme")
admin = User.objects.create_superuser("replica-admin", password="pw-for-tests-only")
session = SessionStore()
session[SESSION_KEY] = str(admin.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = admin.get_session_auth_hash()
session.create()
print(issue_api_key(tenant, "agent", ["ingest", "view_ledger"])[1], session.session_key)
"""


class Cluster:
    """Primary, replica, and two portals on them: ``portal`` uses the replica while it is at
    most an hour behind (looking every 10 s), ``strict_portal`` while it is at most 1 s behind
    (looking before every block)."""

    def __init__(self, primary: OwnPostgres, replica: OwnReplica) -> None:
        self.primary, self.replica = primary, replica
        self.portal: Portal
        self.strict_portal: Portal
        self.key = self.session = ""

    def on_replica(self, sql: str) -> Any:
        with psycopg.connect(self.replica.url("ledger"), autocommit=True,
                             connect_timeout=5) as conn:
            return conn.execute(sql).fetchone()

    def caught_up(self) -> bool:
        with psycopg.connect(self.primary.url("ledger"), autocommit=True) as conn:
            position = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert position is not None
        return bool(self.on_replica(
            f"SELECT pg_last_wal_replay_lsn() >= '{position[0]}'::pg_lsn")[0])

    def pause_replay(self) -> None:
        self.on_replica("SELECT pg_wal_replay_pause()")
        wait_for("the replica's replay to pause",
                 lambda: self.on_replica("SELECT pg_get_wal_replay_pause_state()")[0]
                 == "paused", seconds=30)

    def resume_replay(self) -> None:
        self.on_replica("SELECT pg_wal_replay_resume()")
        wait_for("the replica to catch up", self.caught_up, seconds=30)


def _portal(primary: OwnPostgres, replica: OwnReplica, data: Path, max_lag: int,
            check_every: int) -> Portal:
    portal = Portal(primary, data)
    portal.env.update({"DATABASE_REPLICA_URL": replica.url("ledger"),
                       "LEDGER_REPLICA_MAX_LAG_SECONDS": str(max_lag),
                       "LEDGER_REPLICA_CHECK_SECONDS": str(check_every), "WEB_CONCURRENCY": "1",
                       "LEDGER_METRICS_ALLOW": "127.0.0.1"})
    return portal


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    primary = OwnPostgres()
    primary.start()
    replica: OwnReplica | None = None
    portals: list[Portal] = []
    try:
        with psycopg.connect(primary.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ledger")
        replica = OwnReplica(primary)  # before the schema: the replica receives migrate's WAL
        replica.start()
        made = Cluster(primary, replica)
        # looks at the replica every 10 s: a replica that stops in between fails under a page
        made.portal = _portal(primary, replica, tmp_path_factory.mktemp("portal"), 3600, 10)
        # looks before every block: its 1 s limit is applied at once
        made.strict_portal = _portal(primary, replica, tmp_path_factory.mktemp("strict"), 1, 0)
        # migrate with the replica configured: it runs on the primary only
        made.portal.manage("migrate", "--no-input", "-v0")
        made.key, made.session = made.portal.manage(
            "shell", "-c", SETUP).strip().splitlines()[-1].split()
        for portal in (made.portal, made.strict_portal):
            portal.serve()
            portals.append(portal)
        wait_for("the replica to catch up", made.caught_up, seconds=60)
        yield made
    finally:
        for portal in portals:
            portal.stop()
        if replica is not None:
            replica.remove()
        primary.remove()


def _call(portal: Portal, path: str, *, session: str = "", key: str = "",
          body: dict[str, Any] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if session:
        headers["Cookie"] = f"sessionid={session}"
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{portal.port}{path}", headers=headers,
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


_RUNS = RunGenerator("acme", seed=17, long_run_share=0)  # new ids every run, module-wide


def record_run(cluster: Cluster) -> str:
    run = copy.deepcopy(_RUNS.run())
    status, body = _call(cluster.portal, "/api/v1/batches/", key=cluster.key,
                         body={"runs": [run]})
    assert status == 201, body[:500]  # a write: the primary takes it while the replica waits
    return str(run["run_id"])


def run_list(portal: Portal, cluster: Cluster) -> str:
    status, page = _call(portal, "/admin/runs/run/", session=cluster.session)
    assert status == 200, page[:500]
    return page


def on_primary(cluster: Cluster, run_id: str) -> bool:
    with psycopg.connect(cluster.primary.url("ledger")) as conn:
        return conn.execute("SELECT count(*) FROM runs_run WHERE run_id = %s",
                            [run_id]).fetchone() == (1,)


def test_the_ledger_list_reads_the_replica_and_writes_go_to_the_primary(cluster):
    before = record_run(cluster)
    wait_for("the replica to catch up", cluster.caught_up, seconds=30)
    cluster.pause_replay()
    try:
        after = record_run(cluster)
        assert on_primary(cluster, after)
        page = run_list(cluster.portal, cluster)
        assert before in page  # the list works, from a replica that stopped replaying
        assert after not in page
        # a run's own API read is not stale-ok: it reads the primary and finds the new run
        status, _ = _call(cluster.portal, f"/api/v1/runs/{after}/", key=cluster.key)
        assert status == 200
        # the timeline page is stale-ok: seconds behind, the new run is not there yet
        assert _call(cluster.portal, f"/runs/acme/{after}/", session=cluster.session)[0] == 404
        assert _call(cluster.portal, f"/runs/acme/{before}/",
                     session=cluster.session)[0] == 200
    finally:
        cluster.resume_replay()
    assert after in run_list(cluster.portal, cluster)  # replayed: the replica has it now


def test_decisions_and_approvals_are_taken_and_read_on_the_primary(cluster):
    cluster.pause_replay()
    try:
        status, body = _call(cluster.portal, "/api/v1/decisions/", key=cluster.key,
                             body={"tool": "refund", "action_class": "write"})
        assert status == 201, body[:500]
        approval = json.loads(body)["approval"]["id"]
        # the agent polls the approval it just caused: read on the primary, found
        status, body = _call(cluster.portal, f"/api/v1/approvals/{approval}/", key=cluster.key)
        assert status == 200, body[:500]
        assert json.loads(body)["status"] == "pending"
        assert cluster.on_replica(
            f"SELECT count(*) FROM approvals_approvalrequest WHERE id = {int(approval)}"
        ) == (0,)  # the replica has not replayed it: the answers above came from the primary
    finally:
        cluster.resume_replay()


def test_a_replica_further_behind_than_the_limit_is_left_for_the_primary(cluster):
    cluster.pause_replay()
    try:
        recorded = record_run(cluster)
        # paused, with WAL it has not replayed: its lag grows past 1 s
        wait_for("the replica to lag by more than a second", lambda: float(cluster.on_replica(
            "SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())")[0]) > 2,
            seconds=30)
        assert recorded in run_list(cluster.strict_portal, cluster)  # 1 s limit: primary
        assert recorded not in run_list(cluster.portal, cluster)  # 1 h limit: the replica
        status, metrics = _call(cluster.strict_portal, "/metrics")
        assert status == 200
        assert 'ledger_stale_ok_reads_total{reason="lagging",served_by="primary"}' in metrics
    finally:
        cluster.resume_replay()
    # caught up again: the strict portal reads the replica once more
    run_list(cluster.strict_portal, cluster)
    status, metrics = _call(cluster.strict_portal, "/metrics")
    assert 'ledger_stale_ok_reads_total{reason="ok",served_by="replica"}' in metrics


REQUEST_EXPORT = """
from datetime import UTC, datetime
from django.contrib.auth.models import User
from core.models import Tenant
from exports.services import request_export
print(request_export(Tenant.objects.get(slug="acme"), datetime(2000, 1, 1, tzinfo=UTC),
                     datetime(2100, 1, 1, tzinfo=UTC),
                     by=User.objects.get(username="replica-admin"), enqueue=False).pk)
"""

PRODUCE_EXPORT = """
import sys
from core.metrics import STALE_OK_READS
from exports.models import AuditExport
from exports.services import produce_now
from runs.models import ToolCall
def served(by):
    return sum(sample.value for metric in STALE_OK_READS.collect() for sample in metric.samples
               if sample.name.endswith("_total") and sample.labels["served_by"] == by)
export = produce_now(AuditExport.objects.get(pk=int(sys.argv[-1])))
# Django's server-side cursor outside a transaction (WITH HOLD), as a back-test streams
streamed = sum(1 for _ in ToolCall.objects.using("replica").values_list("pk").iterator(
    chunk_size=7))
print(export.status, export.counts.get("run"), export.counts.get("tool_call"),
      served("replica"), served("primary"), streamed)
"""


def test_an_export_reads_its_rows_from_a_replica_that_has_caught_up(cluster):
    for _ in range(3):
        record_run(cluster)
    export_id = cluster.portal.manage("shell", "-c", REQUEST_EXPORT).strip().splitlines()[-1]
    wait_for("the replica to catch up", cluster.caught_up, seconds=30)
    produce = PRODUCE_EXPORT.replace("sys.argv[-1]", export_id)
    status, runs, calls, replica_blocks, primary_blocks, streamed = cluster.portal.manage(
        "shell", "-c", produce).strip().splitlines()[-1].split()
    assert status == "done"
    # parts run on the replica (one that found it still behind its start after 2 s would read
    # the primary): their raw server-side cursor pages work on a standby
    assert float(replica_blocks) >= 1, (replica_blocks, primary_blocks)
    with psycopg.connect(cluster.primary.url("ledger")) as conn:
        assert conn.execute("SELECT (SELECT count(*) FROM runs_run), "
                            "(SELECT count(*) FROM runs_toolcall)").fetchone() == (
            int(runs), int(calls))  # every run and call the primary holds
    assert int(streamed) == int(calls)


def test_a_stopped_replica_leaves_the_pages_to_the_primary(cluster):
    run_list(cluster.portal, cluster)  # it looked at the replica and reads there
    cluster.replica.stop()
    try:
        recorded = record_run(cluster)
        # within 10 s of its last look, it finds the replica gone under the page; the page
        # runs again on the primary, and later pages go there at once
        assert recorded in run_list(cluster.portal, cluster)
        assert _call(cluster.portal, f"/runs/acme/{recorded}/",
                     session=cluster.session)[0] == 200
        metrics = _call(cluster.portal, "/metrics")[1]
        assert 'ledger_stale_ok_reads_total{reason="failed_over",served_by="primary"}' in metrics
        assert 'ledger_stale_ok_reads_total{reason="down",served_by="primary"}' in metrics
    finally:
        cluster.replica.start()
    wait_for("the replica to catch up", cluster.caught_up, seconds=60)
