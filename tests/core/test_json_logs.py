"""LEDGER_LOG_FORMAT=json: one JSON object per line; each request's access line carries its
request id (the caller's X-Request-ID, else the traceparent's trace id, else a new one), the
route's name, status, duration, tenant and who asked; never a payload, a query string or a
secret an agent sent."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from tests.runs.redaction_corpus import PLANTED, SECRETS, planted_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """The console handler as settings build it for json, writing to a buffer."""
    logging_config: dict[str, Any] = settings.LOGGING
    spec = dict(logging_config["formatters"]["json"])
    factory = spec.pop("()")
    module, name = factory.rsplit(".", 1)
    formatter = getattr(__import__(module, fromlist=[name]), name)(**spec)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    access = logging.getLogger("ledger.access")
    level = access.level
    access.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    access.setLevel(level)


def lines(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]


def test_each_request_logs_one_json_line_with_its_id(acme, key_client, json_lines):
    agent = key_client(acme, ["ingest", "view_ledger"])
    answer = agent.get("/api/v1/runs/?tenant=acme", HTTP_X_REQUEST_ID="req-42")
    assert answer["X-Request-ID"] == "req-42"
    traced = agent.get("/api/v1/runs/", HTTP_TRACEPARENT="00-" + "ab" * 16 + "-" + "cd" * 8
                       + "-01")
    generated = agent.get("/api/v1/runs/", HTTP_X_REQUEST_ID="bad id with spaces")
    access = [line for line in lines(json_lines) if line["name"] == "ledger.access"]
    assert [line["request_id"] for line in access] == [
        "req-42", "ab" * 16, generated["X-Request-ID"]]
    first = access[0]
    assert (first["route"], first["status"], first["tenant"]) == ("api:run-list", 200, "acme")
    assert first["api_key_id"] is not None
    assert first["user_id"] is None
    assert isinstance(first["duration_ms"], float)
    assert traced.status_code == 200


def test_no_planted_secret_reaches_the_logs(acme, key_client, json_lines, caplog):
    agent = key_client(acme, ["ingest", "view_ledger"])
    run = planted_run("log-leak-run", model_calls=3)
    run["trigger_ref"] = f"alert:{SECRETS[0].value}"
    assert agent.post("/api/v1/batches/", {"runs": [run]}, format="json").status_code in (
        200, 201)
    agent.post("/api/v1/decisions/", {"tool": "refund", "action_class": "write",
                                      "arguments": {"token": SECRETS[4].value}},
               format="json")
    agent.get(f"/api/v1/runs/?q={SECRETS[1].value}")  # a secret pasted into a search
    agent.post("/api/v1/batches/", {"runs": [{"run_id": SECRETS[2].value}]}, format="json")
    written = json_lines.getvalue() + "\n".join(r.getMessage() for r in caplog.records)
    assert "ledger.access" in written
    assert [value for value in PLANTED if value in written] == []


PROBE = """
import django
django.setup()
from django.test import Client
from ledger_portal.celery import app
print("celery takes the root logger:", app.conf.worker_hijack_root_logger)
Client().get("/metrics", HTTP_X_REQUEST_ID="probe-1")
"""


def started_with(tmp_path: Any, **settings: str) -> subprocess.CompletedProcess[str]:
    """A process started as an operator starts one: settings from the environment alone."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LEDGER_LOG_FORMAT", "LEDGER_ACCESS_LOG")}
    env.update(DJANGO_SETTINGS_MODULE="ledger_portal.settings", ALLOWED_HOSTS="testserver",
               LEDGER_DATA_DIR=str(tmp_path), **settings)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                          text=True, timeout=120, check=True, cwd=Path(__file__).parents[2])


@pytest.mark.django_db(False)
def test_a_process_started_for_json_writes_json_and_celery_keeps_to_it(tmp_path):
    done = started_with(tmp_path, LEDGER_LOG_FORMAT="json")
    access = [json.loads(line) for line in done.stderr.splitlines()
              if '"ledger.access"' in line]
    assert [(line["request_id"], line["level"]) for line in access] == [("probe-1", "INFO")]
    assert "celery takes the root logger: False" in done.stdout  # its lines are JSON too


@pytest.mark.django_db(False)
def test_plain_text_stays_the_default(tmp_path):
    done = started_with(tmp_path)
    assert "ledger.access" not in done.stderr  # text: no access line unless asked for
    assert "celery takes the root logger: True" in done.stdout  # Celery's own format
    done = started_with(tmp_path, LEDGER_ACCESS_LOG="1")
    access = [line for line in done.stderr.splitlines() if "ledger.access" in line]
    assert len(access) == 1
    assert not access[0].lstrip().startswith("{")
    assert "probe-1" in access[0]  # the request id is in the text line too


def test_a_celery_task_line_carries_no_arguments_or_result(json_lines):
    """Celery's task lines hand their arguments and result to the formatter as ``data`` (the
    text line never shows them): JSON leaves them out too."""
    from celery.app.trace import logger as trace_log

    trace_log.warning("Task %(name)s[%(id)s] succeeded", {"name": "t", "id": "1"}, extra={
        "data": {"id": "1", "name": "t", "args": f"({SECRETS[0].value!r},)",
                 "return_value": SECRETS[1].value}})
    task_lines = [line for line in lines(json_lines) if line["name"] == "celery.app.trace"]
    assert len(task_lines) == 1
    assert "data" not in task_lines[0]
    assert [value for value in PLANTED if value in json_lines.getvalue()] == []
