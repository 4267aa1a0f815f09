"""gunicorn's settings for the web process (``deploy/entrypoint.sh web``). Each may be set by
environment: LEDGER_BIND, WEB_CONCURRENCY, LEDGER_WEB_TIMEOUT, FORWARDED_ALLOW_IPS."""

import multiprocessing
import os

bind = os.environ.get("LEDGER_BIND", "127.0.0.1:8000").split(",")
# Sync workers: a request holds a database connection for its whole life, and the slow ones
# (exports, verification) run in Celery, not here.
workers = int(os.environ.get("WEB_CONCURRENCY", 2 * multiprocessing.cpu_count() + 1))
# Longer than the slowest page a user may open (a long run's timeline), shorter than a proxy's
# own limit, so a stuck worker is replaced rather than holding its slot.
timeout = int(os.environ.get("LEDGER_WEB_TIMEOUT", "60"))
graceful_timeout = 30
# Recycling bounds what a slow leak in a library could cost; the jitter keeps the workers from
# restarting together.
max_requests = 5000
max_requests_jitter = 500
# Only a proxy on this host may tell us the client's address and scheme.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = "-"
errorlog = "-"
# /metrics across workers: each process writes its samples under PROMETHEUS_MULTIPROC_DIR
# (files named by host and pid, core/metrics.py) and a scrape sums them; a dead worker's live
# gauges are dropped (its counters stay: they still count what it did).
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    def child_exit(server: object, worker: object) -> None:
        from prometheus_client import multiprocess

        from core.metrics import process_identifier

        multiprocess.mark_process_dead(process_identifier(worker.pid))  # type: ignore[attr-defined]


# No request line in the access log carries a query string: a search term may be a secret
# someone pasted, and the path alone says which page was served.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
