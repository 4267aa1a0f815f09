"""PostgreSQL's estimate of a run's records: a run's records lie together, so ANALYZE's sample
takes a table of many small runs for one of a few big ones (at 10,000,000 tool calls, 43,721
runs of 229 tool calls instead of 737,000 of 13.5) and reads a run's timeline with a parallel
plan. Migration runs 0034 declares about one run per 20 records, whatever the sample saw."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = [pytest.mark.postgres,
              pytest.mark.tenant_scope_exempt(reason="reads planner statistics")]


@pytest.mark.parametrize("table", ["runs_step", "runs_modelcall", "runs_toolcall"])
def test_analyze_keeps_one_run_per_twenty_records(table, acme, make_run, record):
    for _ in range(3):  # a few runs, each with its records side by side
        record(acme, make_run())
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {table}")
        cursor.execute("SELECT n_distinct FROM pg_stats WHERE tablename = %s "
                       "AND attname = 'run_id'", [table])
        (n_distinct,) = cursor.fetchone()
    # negative: a fraction of the rows, so it grows with the table; the sample alone says 3
    assert n_distinct == pytest.approx(-0.05)
