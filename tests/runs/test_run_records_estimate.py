"""PostgreSQL's estimate of a run's records: a run's records lie together, so ANALYZE's sample
takes a table of many small runs for one of a few big ones (at 10,000,000 tool calls, 43,721
runs of 229 tool calls instead of 737,000 of 13.5) and reads a run's timeline with a parallel
plan. Migration runs 0034 declares about one run per 20 records, whatever the sample saw: for
the whole table and for each of its monthly partitions, those made ahead later included."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection

from core.partitions import MONTHS_AHEAD, ensure_partitions

pytestmark = [pytest.mark.postgres,
              pytest.mark.tenant_scope_exempt(reason="reads planner statistics")]


@pytest.mark.parametrize("table", ["runs_step", "runs_modelcall", "runs_toolcall"])
def test_analyze_keeps_one_run_per_twenty_records(table, acme, make_run, record):
    for _ in range(3):  # a few runs, each with its records side by side
        record(acme, make_run())
    this_month = f"{table}_p{datetime.now(UTC):%Y%m}"
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("SELECT tablename, inherited, n_distinct FROM pg_stats "
                       "WHERE tablename IN (%s, %s) AND attname = 'run_id'", [table, this_month])
        stats = {(name, inherited): n for name, inherited, n in cursor.fetchall()}
    # negative: a fraction of the rows, so it grows with the table; the sample alone says 3
    assert stats == {(table, True): pytest.approx(-0.05),  # the whole partitioned table
                     (this_month, False): pytest.approx(-0.05)}  # the month the rows are in


def test_a_partition_made_ahead_later_declares_it_too(db):
    made = ensure_partitions(months_ahead=MONTHS_AHEAD + 2)  # two months past those made
    assert made
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.relname, a.attoptions FROM pg_attribute a "
                       "JOIN pg_class c ON c.oid = a.attrelid WHERE c.relname = ANY(%s) "
                       "AND a.attname = 'run_id'", [made])
        options = dict(cursor.fetchall())
    for table in ("runs_step", "runs_modelcall", "runs_toolcall"):
        ahead = [name for name in made if name.startswith(f"{table}_p")]
        assert ahead
        assert all("n_distinct=-0.05" in options[name] for name in ahead)
    assert not any("n_distinct" in str(options[name]) for name in made  # declared on none
                   if name.startswith("runs_annotation_p"))
