"""Run every benchmark and write the figures table in bench/README.md (``make bench-report``).

    .venv/bin/python -m bench.report                      # every benchmark, the sizes targets name
    .venv/bin/python -m bench.report --size quick         # smaller data, same cases (a smoke run)
    .venv/bin/python -m bench.report --only decisions,otlp --no-write

Each benchmark runs as its own process, one after another (on 2 cores two at once would measure
each other), with ``BENCH_REPORT_FILE`` naming a JSON-lines file: every target it grades goes
there through ``bench._common.record_figure``, with the same-run baseline, the ratio, the load
average at that moment and the commit. The table between the report markers in bench/README.md
is then rewritten from those lines alone, with the date, the machine and the command, so the
published figures are the printed verdicts of one run, never figures copied by hand. A benchmark
that exits without grading anything (crashed, timed out) is listed as such, with its log.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench._common import (
    DEFAULT_DATA_DIR,
    REPORT_ENV,
    REPORT_NAME_ENV,
    cpu_model,
    git_state,
    load_average,
    reference_loop_ms,
)

REPO = Path(__file__).resolve().parent.parent
README = REPO / "bench" / "README.md"
BEGIN, END = "<!-- bench-report:begin -->", "<!-- bench-report:end -->"
# The published figures as data: the table is written from it; ``--only`` replaces the rows of
# the benchmarks it ran and keeps the others' (each row names its own commit and load).
FIGURES = REPO / "bench" / "figures.jsonl"
SHARED_DB = "ledger_bench_admin"  # made by admin_changelist, measured again by backtest
BIG_DB = "ledger_bench_admin10m"  # made by admin_changelist_10m, measured again by run_detail
QUICK_BIG_DB = "ledger_bench_admin10m_quick"  # --size quick's stand-in, never the 10M one


@dataclass(frozen=True)
class Benchmark:
    name: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()  # replaces sizes for --size quick
    timeout_s: int = 3600
    # The module, when another entry's (the same benchmark at another size): its rows are
    # then recorded under this entry's name, so each size keeps rows of its own.
    module: str = ""


# In the order they run: admin_changelist keeps the 1M-call database backtest reuses.
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("request_middleware", quick=("--requests", "5000")),
    Benchmark("client", quick=("--calls", "5000")),
    Benchmark("decisions", quick=("--decisions", "3000", "--requests", "600",
                                  "--profile-calls", "0")),
    Benchmark("ingest", quick=("--tool-calls", "20000")),
    Benchmark("otlp", quick=("--traces", "600")),
    Benchmark("scaleout", quick=("--requests", "600", "--traces", "1200")),
    Benchmark("run_detail", quick=("--background", "10000")),
    Benchmark("timeline_page", quick=("--background", "10000")),
    Benchmark("long_runs", quick=("--sizes", "100,1000,10000", "--repeat", "3")),
    Benchmark("redaction", quick=("--records", "20000")),
    Benchmark("replay", quick=("--repeat", "1")),
    Benchmark("export", quick=("--tool-calls", "100000")),
    Benchmark("governance_seal", quick=("--decisions", "50000")),
    Benchmark("guess_redacted"),
    Benchmark("verify", quick=("--tenant-records", "20000,80000")),
    Benchmark("retention", quick=("--tool-calls", "20000")),
    Benchmark("admin_changelist", args=("--keep",), quick=("--tool-calls", "100000",
                                                          "--repeat", "5"), timeout_s=7200),
    Benchmark("backtest", args=("--reuse-db", SHARED_DB)),
    # Ten million tool calls (#17): loaded once with the COPY generator (about 13 minutes),
    # kept, and measured again by run detail.
    Benchmark("admin_changelist_10m", module="admin_changelist",
              args=("--tool-calls", "10000000", "--copy", "2", "--reuse-db", "--db-name",
                    BIG_DB, "--repeat", "5"),
              quick=("--tool-calls", "200000", "--repeat", "3", "--db-name", QUICK_BIG_DB),
              timeout_s=7200),
    Benchmark("run_detail_10m", module="run_detail", args=("--reuse-db", "--db-name", BIG_DB),
              quick=("--db-name", QUICK_BIG_DB)),
)


def run_one(bench: Benchmark, size: str, report_file: Path, log_dir: Path) -> tuple[int, float]:
    command = [sys.executable, "-m", f"bench.{bench.module or bench.name}", *bench.args]
    if size == "quick":
        command += list(bench.quick)
    env = {**os.environ, REPORT_ENV: str(report_file)}
    if bench.module:
        env[REPORT_NAME_ENV] = bench.name
    log = log_dir / f"{bench.name}.log"
    print(f"== {bench.name}: {' '.join(command[1:])}  (log {log}; load {load_average()})",
          flush=True)
    started = time.monotonic()
    with log.open("w", encoding="utf-8") as out:
        try:
            rc = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                timeout=bench.timeout_s, check=False).returncode
        except subprocess.TimeoutExpired:
            rc = -1
    return rc, time.monotonic() - started


def markdown(rows: list[dict[str, str]], missing: list[str], header: str) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [header, "",
             "| benchmark | figure | value | target | baseline, same run | ratio | verdict "
             "| load (1/5/15 min) | commit |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines += ["| " + " | ".join(cell(r[k]) for k in ("benchmark", "figure", "value", "target",
                                                      "baseline", "ratio", "verdict", "load",
                                                      "commit")) + " |" for r in rows]
    if missing:
        lines += ["", "Graded nothing (crashed or timed out; see its log): "
                  + ", ".join(missing) + "."]
    passed = sum(r["verdict"] == "PASS" for r in rows)
    failed = sum(r["verdict"] == "FAIL" for r in rows)
    lines += ["", f"{passed} PASS, {failed} FAIL, {len(rows) - passed - failed} without a "
              "target."]
    return "\n".join(lines)


def write_readme(table_md: str) -> None:
    text = README.read_text(encoding="utf-8")
    block = f"{BEGIN}\n{table_md}\n{END}"
    if BEGIN in text and END in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, text,
                      flags=re.S)
    else:
        first_section = text.index("\n## ")
        text = (text[:first_section] + "\n\n## Latest figures (`make bench-report`)\n\n"
                + block + "\n" + text[first_section:])
    README.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("full", "quick"), default="full")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--no-write", action="store_true",
                        help="print the table; leave bench/README.md as it is")
    parser.add_argument("--from-run", metavar="DIR", type=Path,
                        help="run nothing: write the table from an earlier run's log directory "
                        "(one stopped before its end), with the rows of the benchmarks it "
                        "graded")
    args = parser.parse_args(argv)
    names = {b.name for b in BENCHMARKS}
    only = [n for n in args.only.split(",") if n]
    unknown = sorted(set(only) - names)
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {sorted(names)}")
    chosen = [b for b in BENCHMARKS if not only or b.name in only]

    if args.from_run:
        return write_from_run(args.from_run, args.no_write)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = Path(os.environ.get("LEDGER_DATA_DIR", DEFAULT_DATA_DIR)) / "report" / stamp
    log_dir.mkdir(parents=True, exist_ok=True)
    report_file = log_dir / "figures.jsonl"
    report_file.touch()
    commit = git_state()
    reference = reference_loop_ms()  # before the benchmarks: a quiet machine's figure
    (log_dir / "run.json").write_text(json.dumps(
        {"command": command_of(args.size, args.only), "commit": commit,
         "reference_ms": reference, "started": stamp}), encoding="utf-8")
    missing: list[str] = []
    for bench in chosen:
        before = len(report_file.read_text(encoding="utf-8").splitlines())
        rc, seconds = run_one(bench, args.size, report_file, log_dir)
        graded = len(report_file.read_text(encoding="utf-8").splitlines()) - before
        print(f"   {bench.name}: exit {rc}, {graded} figures, {seconds:.0f} s", flush=True)
        if graded == 0:
            missing.append(f"{bench.name} (exit {rc}, {log_dir / (bench.name + '.log')})")

    rows = [json.loads(line) for line in report_file.read_text(encoding="utf-8").splitlines()]
    ran = {b.name for b in chosen} if only else None
    return publish(rows, ran, missing, command_of(args.size, args.only), commit, reference,
                   args.no_write)


def command_of(size: str, only: str) -> str:
    return f"python -m bench.report --size {size}" + (f" --only {only}" if only else "")


def write_from_run(log_dir: Path, no_write: bool) -> int:
    """The table from a run stopped before its end: the benchmarks it graded replace their
    rows, every other row stays as it was; the header says so."""
    run = json.loads((log_dir / "run.json").read_text(encoding="utf-8"))
    rows = [json.loads(line) for line in
            (log_dir / "figures.jsonl").read_text(encoding="utf-8").splitlines()]
    ran = {r["benchmark"] for r in rows}
    order = [b.name for b in BENCHMARKS]
    command = (f"{run['command']}, stopped after {max(ran, key=order.index)}; written by "
               f"--from-run")
    return publish(rows, ran, [], command, run["commit"], run["reference_ms"], no_write)


def publish(rows: list[dict[str, str]], ran: set[str] | None, missing: list[str],
            command: str, commit: str, reference: float, no_write: bool) -> int:
    """Write the table (``ran``: the benchmarks whose rows replace the published ones; None:
    every row is new)."""
    if ran is not None and FIGURES.exists():
        kept = [json.loads(line) for line in FIGURES.read_text(encoding="utf-8").splitlines()]
        order = [b.name for b in BENCHMARKS]
        rows = sorted([r for r in kept if r["benchmark"] not in ran] + rows,
                      key=lambda r: order.index(r["benchmark"])
                      if r["benchmark"] in order else len(order))
    kept_note = "; the other benchmarks' rows as their last run left them" if ran else ""
    header = (f"Regenerated by `make bench-report` (`{command}`{kept_note}) on "
              f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, code {commit}: "
              f"{os.cpu_count()} cores, {platform.machine()} ({cpu_model()}), Python "
              f"{platform.python_version()}; reference loop {reference:.0f} ms (20,000 records "
              "dumped to JSON and hashed, one core: read tables of two machines against it). "
              "Each row is one benchmark's own verdict line; the "
              "load is the machine's when that figure was taken, the commit the code's.")
    table_md = markdown(rows, missing, header)
    print("\n" + table_md)
    if not no_write:
        write_readme(table_md)
        FIGURES.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"\nwrote {README.relative_to(REPO)}")
    return 0 if rows and not missing else 1


if __name__ == "__main__":
    raise SystemExit(main())
