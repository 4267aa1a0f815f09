"""What the benchmarks share: a throwaway PostgreSQL database, Django set up on it, timing
statistics and a plain-text table.

Every benchmark gets its own database (``ledger_bench_<name>``), created here with psycopg before
``django.setup()`` and dropped at the end unless asked to keep it. Files the app writes (its
secret key, the Celery folder) go to ``LEDGER_DATA_DIR`` (``/tmp/ledger-bench``), never into the
repository.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_DATA_DIR = "/tmp/ledger-bench"


def add_db_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    group = parser.add_argument_group("database")
    group.add_argument("--pg-url", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG_URL),
                       help="a PostgreSQL URL to create/drop the bench database from "
                       "(default %(default)s; only 127.0.0.1/localhost)")
    group.add_argument("--db-name", default=f"ledger_bench_{name}",
                       help="the throwaway database (default %(default)s)")
    group.add_argument("--keep", action="store_true",
                       help="keep the database at the end (default: drop it)")
    group.add_argument("--data-dir", default=DEFAULT_DATA_DIR,
                       help="LEDGER_DATA_DIR for the app's files (default %(default)s)")


def _with_db(url: str, db_name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db_name}"))


def _check_local(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit(f"refusing to benchmark against {host!r}: only a local PostgreSQL "
                 "(127.0.0.1) is allowed")


@dataclass
class BenchDB:
    name: str
    admin_url: str
    url: str
    created: bool  # False: an existing database was reused

    def admin_connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True)


def _quote(name: str) -> str:
    if not name.replace("_", "").isalnum():
        sys.exit(f"bad database name {name!r}")
    return f'"{name}"'


@contextlib.contextmanager
def bench_database(args: argparse.Namespace, reuse: bool = False) -> Iterator[BenchDB]:
    """Create (or, with ``reuse``, reuse) the bench database, set Django up on it, migrate;
    drop it at the end unless ``args.keep`` (a reused database is always kept)."""
    import psycopg

    _check_local(args.pg_url)
    url = _with_db(args.pg_url, args.db_name)
    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              [args.db_name]).fetchone() is not None
        if exists and not reuse:
            conn.execute(f"DROP DATABASE {_quote(args.db_name)} WITH (FORCE)")
        if not exists or not reuse:
            conn.execute(f"CREATE DATABASE {_quote(args.db_name)}")
    db = BenchDB(name=args.db_name, admin_url=args.pg_url, url=url,
                 created=not (exists and reuse))

    os.environ["DATABASE_URL"] = url
    os.environ["LEDGER_DATA_DIR"] = args.data_dir
    os.environ["DJANGO_SETTINGS_MODULE"] = "ledger_portal.settings"
    # Production settings: DEBUG off (no query log, no debug pages).
    os.environ["DEBUG"] = "0"
    # In production TLS ends at the proxy before the app; the in-process clients speak plain
    # HTTP, which would otherwise only be redirected to https (a 301, measuring nothing).
    os.environ.setdefault("LEDGER_HTTPS", "0")
    # The benchmarks' tool servers listen on loopback, which egress refuses unless listed.
    os.environ.setdefault("LEDGER_EGRESS_ALLOW", "127.0.0.1,localhost")
    os.makedirs(args.data_dir, exist_ok=True)
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0, interactive=False)
        yield db
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        if args.keep or not db.created:
            print(f"\n(database {db.name} kept: {db.url})")
        else:
            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {_quote(db.name)} WITH (FORCE)")


def environment_line(db: BenchDB) -> str:
    from django.conf import settings
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    cache = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    return (f"PostgreSQL {pg} db={db.name} | Python {platform.python_version()} | "
            f"{os.cpu_count()} cores | cache={cache} | DEBUG={settings.DEBUG} | "
            f"code {git_state()}")


def cpu_model() -> str:
    """The processor's name as the kernel gives it ("" where it does not)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def reference_loop_ms(rounds: int = 5) -> float:
    """The median time of a fixed piece of the work the ledger does (JSON dumped and hashed,
    20,000 small records) on one core: a figure to read two tables of different machines
    against, since the same code on two VMs of the same class can differ threefold."""
    import hashlib
    import json

    record = {"tool": "crm.lookup", "input": {"customer": "c-1042", "fields": ["email", "tier"]},
              "status": "succeeded", "attempt": 1}
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for seq in range(20_000):
            record["attempt"] = seq
            hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def git_state() -> str:
    """The commit measured, and how many app files differ from it (the tree is shared)."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=repo, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "(no git)"
    dirty = [line for line in status.splitlines() if not line[3:].startswith("bench/")]
    return f"{head}" + (f" + {len(dirty)} modified app files" if dirty else "")


# -- timing --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


@dataclass
class Timing:
    samples_ms: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p95(self) -> float:
        return percentile(self.samples_ms, 95)

    @property
    def minimum(self) -> float:
        return min(self.samples_ms)


def time_calls(fn: Callable[[], Any], repeat: int, warmup: int) -> Timing:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return Timing(samples)


class CollectorTime:
    """Time the cyclic garbage collector spent while the block ran (``gc.callbacks``): how
    much of a request is collection, by generation."""

    def __init__(self) -> None:
        self.ms = {0: 0.0, 1: 0.0, 2: 0.0}
        self.runs = {0: 0, 1: 0, 2: 0}
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.runs[generation] += 1
            self.ms[generation] += (time.perf_counter() - self._started) * 1000

    def __enter__(self) -> CollectorTime:
        import gc

        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *_: object) -> None:
        import gc

        gc.callbacks.remove(self._callback)

    def line(self, calls: int) -> str:
        total = sum(self.ms.values())
        return (f"{total / max(calls, 1):.1f} ms a call collecting ("
                + ", ".join(f"gen{g}: {self.runs[g] / max(calls, 1):.1f} runs, "
                            f"{self.ms[g] / max(calls, 1):.1f} ms" for g in self.ms) + ")")


def as_web_worker() -> str:
    """Put this process in the state a web worker serves in: its start-up heap frozen, as
    ``ledger_portal/wsgi.py`` does (``core.heap``). Call once the data is loaded, before
    timing; returns a line saying so."""
    from core.heap import freeze_startup_heap

    return f"start-up heap frozen as a web worker's (core.heap): {freeze_startup_heap():,} objects"


# -- output --------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(row, widths, strict=True)))

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value >= 1000:
            return f"{value:,.0f}"
        if value >= 100:
            return f"{value:.0f}"
        return f"{value:.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def profile_call(fn: Callable[[], Any], top: int = 30, sort: str = "cumulative") -> str:
    """cProfile ``fn`` once; the top functions as text."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(sort).print_stats(top)
    return out.getvalue()


# -- the report (make bench-report) --------------------------------------------------------

REPORT_ENV = "BENCH_REPORT_FILE"
# The name the figures are recorded under, when the report runs a benchmark at another size
# under an entry of its own (bench.report's ``Benchmark.module``).
REPORT_NAME_ENV = "BENCH_REPORT_NAME"


def load_average() -> str:
    """The 1/5/15-minute load averages: figures taken on 2 shared cores mean little without."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def record_figure(benchmark: str, figure: str, value: str, target: str,
                  baseline: str, ratio: str, ok: bool | None) -> str:
    """Print one target's line and, when ``BENCH_REPORT_FILE`` names a file (``make
    bench-report`` sets it), append it there as a JSON line for bench/README.md's table.

    ``ok`` None: a figure with no target of its own (shown, not graded). Every target a
    benchmark checks goes through here, so the published table is the printed verdicts."""
    import json

    grade = "-" if ok is None else verdict(ok)
    benchmark = os.environ.get(REPORT_NAME_ENV) or benchmark
    row = {"benchmark": benchmark, "figure": figure, "value": value, "target": target,
           "baseline": baseline, "ratio": ratio, "verdict": grade, "load": load_average(),
           "commit": git_state()}
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
    line = (f"[{grade}] {benchmark}: {figure} = {value} (target {target}; baseline {baseline}; "
            f"ratio {ratio}; load {row['load']})")
    print(line)
    return line
