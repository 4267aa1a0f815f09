"""How many processes ``ledger verify`` uses: a worker is a spawned process that sets Django up
(seconds of start-up), so a small tenant is checked by one and a big one shared out."""

from __future__ import annotations

import pytest

from runs.integrity import verify_tenant
from runs.integrity_parallel import MOST_WORKERS, choose_workers, tenant_records


def test_a_tenant_below_the_threshold_is_verified_by_one_process():
    assert choose_workers(0, cpus=2, threshold=1000) == 1
    assert choose_workers(999, cpus=8, threshold=1000) == 1


def test_each_further_threshold_of_records_adds_a_process_up_to_the_cores():
    assert choose_workers(1000, cpus=8, threshold=1000) == 2
    assert choose_workers(2999, cpus=8, threshold=1000) == 3
    assert choose_workers(10**9, cpus=2, threshold=1000) == 2
    assert choose_workers(10**9, cpus=1, threshold=1000) == 1


def test_never_more_than_the_most_workers_whatever_the_cores():
    assert choose_workers(10**9, cpus=64, threshold=1000) == MOST_WORKERS


@pytest.mark.django_db
def test_the_record_count_comes_from_the_run_rows_and_matches_what_verify_checks(
        acme, record, make_run):
    record(acme, *[make_run() for _ in range(7)])
    assert tenant_records(acme) == verify_tenant(acme, workers=1).records
