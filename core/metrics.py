"""What the portal counts, for Prometheus (``GET /metrics``).

Counters and histograms are incremented where the work happens, one line each (ingestion,
OTLP, decisions, exports, requests). State (approval requests by status, integrity alarms, the
worker heartbeat's age, the Celery queue's depth) is read at scrape time by
``ledger_portal.metrics.StateCollector`` (it reads every app, so it lives in the project),
from a handful of indexed counts. Labels are bounded: a route is its URL pattern's name, never
a path; an effect, a kind or a status is one of a fixed set. No tenant content, no id.

Under gunicorn with several workers, and for the Celery workers' job timings, set
``PROMETHEUS_MULTIPROC_DIR`` to one folder that the web and worker processes share (empty
when the installation starts): each process writes its samples there and a scrape sums them.
Files are named by host and process id, so containers sharing a volume never write to one
another's files (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
    values,
)


def process_identifier(pid: int | None = None) -> str:
    """This process's name in the multiprocess folder: host and pid (two containers sharing
    the folder may both have pid 7). No underscore: the reader splits file names on it."""
    return f"{socket.gethostname()}-{os.getpid() if pid is None else pid}".replace("_", "-")


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    # a management command run with the service's environment (migrate, check, createsuperuser)
    # may come first, before anything made the folder
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    # before any metric below is built: each takes its value class when it is created
    values.ValueClass = values.MultiProcessValue(  # type: ignore[no-untyped-call]
        process_identifier)

REQUESTS = Counter("ledger_http_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("ledger_http_request_duration_seconds",
                            "Time to answer an HTTP request", ["route"])
RECORDS = Counter("ledger_records_ingested_total", "Ledger records created by ingestion",
                  ["kind"])
SPANS = Counter("ledger_otlp_spans_total",
                "OTLP spans received: accepted, of which deferred (kept pending until the "
                "trace's root or quiet period), or rejected", ["outcome"])
DECISIONS = Counter("ledger_decisions_total", "Tool-call decisions taken", ["effect"])
DECISION_SECONDS = Histogram(
    "ledger_decision_duration_seconds", "Time to decide a proposed tool call",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))
EXPORT_BYTES = Counter("ledger_export_bytes_total", "Bytes of finished audit export bundles")
JOB_SECONDS = Histogram("ledger_job_duration_seconds", "Time a Celery task ran", ["task"],
                        buckets=(0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600))
JOBS = Counter("ledger_jobs_total", "Celery tasks finished, by task and outcome",
               ["task", "outcome"])
STALE_OK_READS = Counter(
    "ledger_stale_ok_reads_total", "Blocks of reads that may be stale (core/db_routing.py), by "
    "the server that served them and why (ok, down, lagging, behind_position, in_transaction)",
    ["served_by", "reason"])
REPLICA_LAG = Gauge("ledger_replica_lag_seconds",
                    "How far the read replica's replay was behind at this process's last look",
                    multiprocess_mode="max")


def count_ingested(created: Any) -> None:
    for kind, number in created.items():
        if number:
            RECORDS.labels(kind=kind).inc(number)


def count_spans(accepted: int = 0, rejected: int = 0, deferred: int = 0) -> None:
    SPANS.labels(outcome="accepted").inc(accepted)
    SPANS.labels(outcome="rejected").inc(rejected)
    SPANS.labels(outcome="deferred").inc(deferred)


def count_decision(effect: str, started: float) -> None:
    DECISIONS.labels(effect=effect).inc()
    DECISION_SECONDS.observe(time.perf_counter() - started)


_job_started: dict[str, float] = {}


def _job_starts(task_id: str = "", **_: Any) -> None:
    _job_started[task_id] = time.perf_counter()


def _job_ends(task_id: str = "", task: Any = None, state: str | None = None, **_: Any
              ) -> None:
    started = _job_started.pop(task_id, None)
    if started is None or task is None:
        return
    name = str(getattr(task, "name", "") or "unnamed")[:100]  # registered names: bounded
    JOB_SECONDS.labels(task=name).observe(time.perf_counter() - started)
    JOBS.labels(task=name, outcome="succeeded" if state == "SUCCESS" else (
        state or "unknown").lower()).inc()


def time_celery_jobs() -> None:
    """Time every Celery task where it runs (a worker, or the web process when eager)."""
    from celery.signals import task_postrun, task_prerun

    task_prerun.connect(_job_starts, weak=False, dispatch_uid="ledger_job_starts")
    task_postrun.connect(_job_ends, weak=False, dispatch_uid="ledger_job_ends")
