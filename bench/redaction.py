"""Redaction throughput: the engine over generated tool calls, beside a plain deep copy.

    .venv/bin/python -m bench.redaction [--records 100000] [--repeat 3] [--planted-every 50]

Generates ``--records`` tool calls with ``bench.generate.RunGenerator(unique=True)``: every
e-mail address, secret and piece of free text differs from record to record, as in real
traffic (every ``--planted-every``-th record is replaced by a planted one from the redaction
corpus: secrets and personal data in nested inputs, outputs and errors). Then times, over the
same records:

- the baselines: a deep copy of the three fields (``orjson.loads(orjson.dumps(x))``, and
  ``copy.deepcopy``);
- ``Redactor(level).redact_fields(record, ("input", "output", "error"), record's labels)`` for
  strict, standard and none, and strict with three tenant rules;
- beside them, strict over the **repeated-string** records (the generator's default: addresses,
  errors and queries drawn from small pools), which the engine's per-string detector cache
  mostly answers: the difference is what the cache saves, and what a benchmark on generated
  repeats would have flattered.

Each figure is the best of ``--repeat`` passes (a fresh ``Redactor`` per pass, so the cache
starts empty, as it does for each export part). Then checks that strict leaked no planted value.
Target: strict (unique strings) under 50 µs per record, graded via ``record_figure``. No
Django, no database.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson

from bench._common import git_state, load_average, record_figure, table
from bench.generate import RunGenerator
from runs.redaction import Redactor, TenantRule
from tests.runs.redaction_corpus import CLEAN, PLANTED, SECRETS, planted_tool_calls

FIELDS = ("input", "output", "error")
TARGET_US = 50.0


def make_records(n: int, seed: int, planted_every: int, unique: bool = True
                 ) -> list[dict[str, Any]]:
    gen = RunGenerator("bench", seed=seed, unique=unique)
    records: list[dict[str, Any]] = []
    while len(records) < n:
        records.extend(gen.run()["tool_calls"])
    del records[n:]
    if planted_every > 0:
        slots = range(0, n, planted_every)
        planted = planted_tool_calls(len(slots), run_id="bench-planted")
        for slot, record in zip(slots, planted, strict=True):
            records[slot] = record
    return records


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--planted-every", type=int, default=50,
                        help="every n-th record is a planted one (0: none; default %(default)s)")
    args = parser.parse_args(argv)

    records = make_records(args.records, args.seed, args.planted_every)
    repeated = make_records(args.records, args.seed, args.planted_every, unique=False)
    n = len(records)
    leaves = sum(_leaves(r.get(f)) for r in records for f in FIELDS) / n
    print(f"Python {platform.python_version()} | {os.cpu_count()} cores | code {git_state()} | "
          f"load {load_average()}")
    print(f"{n:,} tool calls ({leaves:.1f} leaves each in input/output/error on average; "
          f"{sum(1 for r in records if r['call_id'].startswith('bench-planted')):,} planted, "
          f"corpus {len(SECRETS)} planted values / {len(CLEAN)} clean values), "
          f"strings of >= 6 characters repeated: {_repeat_share(records):.0%} (unique "
          f"strings) / {_repeat_share(repeated):.0%} (repeated), best of {args.repeat}\n")

    def orjson_copy(records: list[dict[str, Any]] = records) -> None:
        for r in records:
            {f: orjson.loads(orjson.dumps(r[f])) for f in FIELDS if f in r}

    def deepcopy_copy() -> None:
        for r in records:
            {f: copy.deepcopy(r[f]) for f in FIELDS if f in r}

    def redact_with(level: str, rules: list[TenantRule] | None = None,
                    records: list[dict[str, Any]] = records) -> Callable[[], None]:
        def run() -> None:  # a fresh Redactor each pass: its detector cache starts empty
            redact = Redactor(level, rules or ()).redact_fields
            for r in records:
                redact(r, FIELDS, r["classifications"])
        return run

    rules = [TenantRule("*password*", "secret"), TenantRule("ssn", "restricted"),
             TenantRule("$.output.customer.email", "confidential")]
    phases: list[tuple[str, Callable[[], None]]] = [
        ("baseline: orjson round-trip", orjson_copy),
        ("baseline: copy.deepcopy", deepcopy_copy),
        ("strict", redact_with("strict")),
        ("strict + 3 tenant rules", redact_with("strict", rules)),
        ("standard", redact_with("standard")),
        ("none", redact_with("none")),
        ("baseline: orjson round-trip, repeated strings",
         lambda: orjson_copy(repeated)),
        ("strict, repeated strings (cache-friendly)", redact_with("strict", records=repeated)),
    ]
    timings = {name: best_of(args.repeat, fn) for name, fn in phases}
    base = timings["baseline: orjson round-trip"] / n
    rows = [(name, seconds / n * 1e6, n / seconds, seconds / n / base, seconds)
            for name, seconds in timings.items()]
    # The bigger records alone (a customer lookup: ~8-10 leaves), against their own baseline.
    big = [r for r in records if sum(_leaves(r.get(f)) for f in FIELDS) >= 8]
    if big:
        seconds = best_of(args.repeat, redact_with("strict", records=big))
        big_base = best_of(args.repeat, lambda: orjson_copy(big))
        rows.append((f"strict, records with >= 8 leaves ({len(big):,})", seconds / len(big) * 1e6,
                     len(big) / seconds, seconds / big_base, seconds))
    print(table(["phase (unique strings unless said)", "µs/record", "records/s",
                 "vs orjson copy", "total s"], rows))

    strict = Redactor("strict")
    out = [strict.redact_fields(r, FIELDS, r["classifications"]) for r in records]
    body = orjson.dumps(out).decode()
    leaks = [s for s in PLANTED if s in body]
    reasons = Counter(_reasons(out))
    strict_us = timings["strict"] / n * 1e6  # the target is on all records
    repeated_us = timings["strict, repeated strings (cache-friendly)"] / n * 1e6
    print(f"\nmarkers in strict output: {sum(reasons.values()):,} "
          f"({', '.join(f'{k} {v:,}' for k, v in reasons.most_common(6))}, ...)")
    print(f"planted values leaked by strict: {len(leaks)}")
    ok = strict_us < TARGET_US and not leaks
    record_figure("redaction", "strict, unique strings, µs/record", f"{strict_us:.1f}",
                  f"< {TARGET_US:.0f} and no planted value leaked",
                  f"orjson round-trip {base * 1e6:.1f} µs", f"{strict_us / TARGET_US:.2f}x "
                  f"target; {len(leaks)} leaks", ok)
    record_figure("redaction", "strict, repeated strings (detector cache), µs/record",
                  f"{repeated_us:.1f}", "(none: shows the cache effect)",
                  f"strict, unique strings {strict_us:.1f} µs",
                  f"unique / repeated {strict_us / repeated_us:.2f}x", None)
    return 0 if ok else 1


def _repeat_share(records: list[dict[str, Any]]) -> float:
    """Of the strings of >= 6 characters (those the detector cache holds), the share that
    occurred before."""
    seen: set[str] = set()
    total = repeats = 0
    for r in records:
        for f in FIELDS:
            for text in _strings(r.get(f)):
                total += 1
                repeats += text in seen
                seen.add(text)
    return repeats / max(total, 1)


def _strings(value: Any) -> Any:
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str) and len(value) >= 6:
        yield value


def _leaves(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_leaves(v) for v in value)
    return 0 if value is None else 1


def _reasons(value: Any) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"redacted", "path", "reason"}:
            return [value["reason"]]
        return [r for v in value.values() for r in _reasons(v)]
    if isinstance(value, list):
        return [r for v in value for r in _reasons(v)]
    return []


if __name__ == "__main__":
    sys.exit(main())
