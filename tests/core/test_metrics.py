"""GET /metrics: Prometheus text for a scraper with the token (or from an allowed network),
404 for everyone else and for everyone when neither is configured; after real traffic the
counters and histograms have moved, and no label carries an id or content."""

from __future__ import annotations

import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from approvals.services import request_approval

pytestmark = pytest.mark.django_db
TOKEN = "metrics-test-token-0123456789"


def scrape(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert answer.status_code == 200
    assert answer["Content-Type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(answer.content.decode())
            for sample in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_unless_configured(client, settings):
    settings.LEDGER_METRICS_TOKEN, settings.LEDGER_METRICS_ALLOW = "", []
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 404


def test_a_wrong_token_is_a_401_and_another_network_a_403(client, settings):
    settings.LEDGER_METRICS_TOKEN, settings.LEDGER_METRICS_ALLOW = TOKEN, ["10.0.0.0/8"]
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401
    assert wrong["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert client.get("/metrics").status_code == 401  # no token, from outside the networks
    assert b"ledger_" not in wrong.content
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 200


def test_a_caller_outside_the_allowed_networks_is_a_403_when_there_is_no_token(client,
                                                                               settings):
    settings.LEDGER_METRICS_TOKEN, settings.LEDGER_METRICS_ALLOW = "", ["10.0.0.0/8"]
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.9.9.9").status_code == 200


def test_a_worker_job_is_timed_by_task_and_beats_the_heartbeat(client, settings):
    from core.tasks import worker_heartbeat

    settings.LEDGER_METRICS_TOKEN = TOKEN
    before = scrape(client)
    worker_heartbeat.apply()
    after = scrape(client)
    task = "ledger_portal.worker_heartbeat"
    assert value(after, "ledger_job_duration_seconds_count", task=task) == value(
        before, "ledger_job_duration_seconds_count", task=task) + 1
    assert value(after, "ledger_jobs_total", task=task, outcome="succeeded") == value(
        before, "ledger_jobs_total", task=task, outcome="succeeded") + 1
    assert 0 <= value(after, "ledger_worker_heartbeat_age_seconds") < 3600


def test_real_traffic_moves_the_counters(acme, alice, make_run, key_client, client, settings):
    settings.LEDGER_METRICS_TOKEN = TOKEN
    before = scrape(client)
    agent = key_client(acme, ["ingest", "view_ledger"])
    run = make_run()
    assert agent.post("/api/v1/batches/", {"runs": [run]}, format="json").status_code in (
        200, 201)
    answer = agent.post("/api/v1/decisions/", {
        "tool": "send_email", "action_class": "exfil", "arguments": {"to": "x@example.com"},
        "run_id": run["run_id"], "call_id": "asked-1", "agent_id": run["agent_id"]},
        format="json")
    assert answer.status_code == 201
    request_approval(acme, tool="refund", action_class="write", arguments={})
    acme.batch_unknown_fields = "lenient"
    acme.save()
    newer = {**run, "tool_calls": [{**run["tool_calls"][0], "reasoning": "x"}]}
    assert agent.post("/api/v1/batches/", {"runs": [newer]}, format="json").status_code in (
        200, 201)
    after = scrape(client)

    assert value(after, "ledger_records_ingested_total", kind="tool_calls") - value(
        before, "ledger_records_ingested_total", kind="tool_calls") == len(run["tool_calls"])
    effect = answer.json()["effect"]
    assert value(after, "ledger_decisions_total", effect=effect) == value(
        before, "ledger_decisions_total", effect=effect) + 1
    assert value(after, "ledger_decision_duration_seconds_count") == value(
        before, "ledger_decision_duration_seconds_count") + 1
    assert value(after, "ledger_http_requests_total", route="api:batch-ingest", method="POST",
                 status="201") + value(after, "ledger_http_requests_total",
                                       route="api:batch-ingest", method="POST",
                                       status="200") >= 1
    assert value(after, "ledger_approval_requests", status="pending") >= 2
    assert value(after, "ledger_worker_heartbeat_age_seconds") == -1  # no worker ran here
    assert ("ledger_integrity_alarms", ()) in after
    assert value(after, "ledger_deferred_items", status="pending", source="batch") == 1
    labels = " ".join(v for key in after for _, v in key[1])
    assert run["run_id"] not in labels
    assert "acme" not in labels  # no tenant, no id, no content in a label
    assert not re.search(r"/api/v1/", labels)  # routes by name, never a path


def test_the_sample_grafana_dashboard_queries_only_series_the_portal_exposes(client, settings):
    import json
    from pathlib import Path

    settings.LEDGER_METRICS_TOKEN = TOKEN
    dashboard = json.loads((Path(__file__).resolve().parents[2] / "deploy" /
                            "grafana-dashboard.json").read_text())
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(ledger_[a-z_]+)", target["expr"])}
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").content.decode()
    declared = set(re.findall(r"^# TYPE (ledger_[a-z_]+) (\w+)", text, re.M))
    exposed = {n for n, _ in declared} | {f"{n}_{s}" for n, kind in declared
                                          for s in ("bucket", "count", "sum", "total")}
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        exposed.add("ledger_celery_queue_depth")  # read from Redis only (the PG+Redis suite)
    assert len(dashboard["panels"]) >= 10
    assert sorted(queried - exposed) == []


COUNT_IN_A_PROCESS = """
import sys
from core.metrics import count_ingested
count_ingested({"tool_calls": int(sys.argv[1])})
"""


def test_several_processes_add_up_in_the_multiprocess_folder(tmp_path):
    """gunicorn's and Celery's processes each write their own files (named by host and pid, so
    containers sharing the folder never share a file); a scrape sums them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from prometheus_client import CollectorRegistry, multiprocess

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for number in ("2", "3"):
        subprocess.run([sys.executable, "-c", COUNT_IN_A_PROCESS, number], env=env,
                       check=True, timeout=60, cwd=Path(__file__).parents[2])
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))
    assert registry.get_sample_value("ledger_records_ingested_total",
                                     {"kind": "tool_calls"}) == 5
    named = [re.fullmatch(r"(counter|histogram|gauge_max)_([A-Za-z0-9.-]+-\d+)\.db", p.name)
             for p in tmp_path.iterdir()]
    assert all(named)
    assert len({name.group(2) for name in named if name}) == 2
