"""Scaling out on one machine, as docs/operations.md describes it: two web processes (gunicorn,
as ``deploy/entrypoint.sh web`` runs it) and two Celery workers on one PostgreSQL and Redis. A
sandbox replay, a multi-part export and a back-test are asked for through the two web processes
at once while agents ask both for decisions; each job finishes, and nothing is done twice
(every export part written once, every replay step once and each tool asked once per step,
every changed call of the back-test kept once, every decision recorded once)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.utils import timezone

from ledger_portal.tool_server import http_tool_server
from tests.celery_conf import worker_env
from tests.replay.scenario import allow_everything, recorded_run, stored_run, wire_tools

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]
PART_ROWS = 200  # small parts, so an export has several for the two workers to share
DECISIONS_PER_WEB = 15


def _process_env() -> dict[str, str]:
    """What every web process and worker of the installation shares: the database, Redis, the
    data folder and the secret key."""
    return worker_env(LEDGER_DATA_DIR=str(settings.DATA_DIR),
                      LEDGER_EXPORT_TMP_DIR=str(settings.LEDGER_EXPORT_TMP_DIR),
                      LEDGER_EXPORT_PART_ROWS=str(PART_ROWS),
                      LEDGER_EGRESS_ALLOW="127.0.0.1,localhost", SECRET_KEY=settings.SECRET_KEY,
                      DEBUG="0", LEDGER_HTTPS="0", ALLOWED_HOSTS="127.0.0.1")


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    workers = []
    for n in range(2):
        with (tmp_path / f"worker-{n}.log").open("w") as log:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "ledger_portal", "worker", "-n",
                 f"scale-{n}-{os.getpid()}@%h", "--pool", "solo", "--loglevel", "WARNING",
                 "--without-heartbeat", "--without-gossip", "--without-mingle"],
                cwd=ROOT, env=_process_env(), stdout=log, stderr=subprocess.STDOUT))
    try:
        yield workers
    finally:
        _stop(workers)


def web_processes(tmp_path: Path, env_of: Callable[[int], dict[str, str]] = lambda n: {}
                  ) -> Iterator[list[str]]:
    """Two gunicorn web processes with the repository's config, each on its own port (process
    ``n`` also gets ``env_of(n)``); their URLs once both answer, stopped afterwards."""
    webs, urls = [], []
    for n in range(2):
        port = _free_port()
        urls.append(f"http://127.0.0.1:{port}")
        env = {**_process_env(), "LEDGER_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "2",
               **env_of(n)}
        with (tmp_path / f"web-{n}.log").open("w") as log:
            webs.append(subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "--config", "deploy/gunicorn.conf.py",
                 "ledger_portal.wsgi"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    try:
        for n, url in enumerate(urls):
            _until(lambda url=url: _answers(f"{url}/healthz"),
                   f"web process {n} ({(tmp_path / f'web-{n}.log').read_text()[-2000:]})", 60)
        yield urls
    finally:
        _stop(webs)


@pytest.fixture
def two_webs(tmp_path: Path) -> Iterator[list[str]]:
    """Two gunicorn web processes with the repository's config, each on its own port."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    yield from web_processes(tmp_path)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _call(url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            found: dict[str, Any] = json.loads(answer.read())
            return found
    except urllib.error.HTTPError as refused:
        raise AssertionError(f"{url}: {refused.code} {refused.read()[:500]!r}") from None


def _until(done: Any, what: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"{what} did not finish within {seconds} s"
        time.sleep(0.3)


def test_two_webs_and_two_workers_share_a_replay_an_export_a_backtest_and_decisions(
        two_webs, two_workers, acme, alice, record, make_run, api_key, settings, tmp_path):
    from core.access_tokens import issue_personal_token
    from exports.models import AuditExport, ExportStatus
    from operations.models import Replay
    from policies.models import BackTest, Decision, Rule
    from policies.services import create_draft

    settings.LEDGER_EXPORT_PART_ROWS = PART_ROWS
    record(acme, recorded_run(), *[make_run() for _ in range(30)])
    published = allow_everything(acme)
    draft = create_draft(published.policy, by=alice, change_note="deny writes")
    Rule.objects.create(tenant=acme, version=draft, name="no writes", action_classes=["write"],
                        effect="deny")
    _, token = issue_personal_token(alice, "scale-out", ["view_ledger", "operate", "export",
                                                          "manage_policies"])
    agent_key = api_key(acme, ["ingest"])
    window = [(timezone.now() - timedelta(days=3650)).isoformat(),
              (timezone.now() + timedelta(days=1)).isoformat()]
    first, second = two_webs

    def decide(url: str, n: int) -> int:
        answer = _call(f"{url}/api/v1/decisions/", agent_key, {
            "run_id": "scale-decisions", "call_id": f"{url[-5:]}-{n}", "agent_id": "scale-bot",
            "tool": "lookup", "action_class": "read", "arguments": {"n": n}})
        return int(answer["id"])

    with http_tool_server() as server, ThreadPoolExecutor(4) as pool:
        wire_tools(acme, server)
        decided = [pool.submit(decide, url, n) for n in range(DECISIONS_PER_WEB)
                   for url in two_webs]
        replay_answer = _call(f"{first}/api/v1/replays/", token,
                              {"run_id": stored_run(acme).run_id})
        export_answer = _call(f"{second}/api/v1/exports/", token, {
            "tenant": acme.slug, "window_from": window[0], "window_to": window[1]})
        test_answer = _call(f"{first}/api/v1/policy-versions/{draft.pk}/backtests/", token, {
            "window_from": window[0], "window_to": window[1]})
        decision_ids = [future.result() for future in decided]
        # each web process answers about jobs the other one started
        _until(lambda: _call(f"{second}/api/v1/replays/{replay_answer['id']}/", token)["status"]
               not in ("queued", "running"), "the replay")
        _until(lambda: _call(f"{first}/api/v1/exports/{export_answer['id']}/", token)[
            "status"] in (ExportStatus.DONE, ExportStatus.FAILED), "the export")
        _until(lambda: _call(f"{second}/api/v1/backtests/{test_answer['id']}/", token)[
            "status"] in ("done", "failed"), "the back-test")
        asked = [seen.path for seen in server.seen]

    assert len(decision_ids) == len(set(decision_ids)) == 2 * DECISIONS_PER_WEB
    assert Decision.objects.filter(tenant=acme, run_id="scale-decisions").count() == len(
        decision_ids)

    replay = Replay.objects.get(pk=replay_answer["id"])
    assert replay.status == "succeeded", replay.failure_reason
    seqs = list(replay.steps.values_list("seq", flat=True))
    assert len(seqs) == len(set(seqs)) == replay.steps_total
    assert sorted(asked) == sorted(set(asked))  # each tool asked once per replayed step

    export = AuditExport.objects.get(pk=export_answer["id"])
    assert export.status == ExportStatus.DONE, export.error
    parts = list(export.parts.values_list("index", flat=True))
    assert len(parts) > 1  # the parts were spread over the workers
    assert sorted(parts) == sorted(set(parts))

    test = BackTest.objects.get(pk=test_answer["id"])
    assert test.status == "done", test.error
    assert test.processed == test.total > 0
    changed = list(test.changes.values_list("call_id", flat=True))
    assert len(changed) == len(set(changed)) == test.changed > 0
