"""Celery tasks of the policies app: thin, by id, safe to run twice."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="policies.run_backtest", acks_late=True)
def run_backtest(backtest_id: int) -> int | None:
    from .backtest import run

    test = run(backtest_id)
    return None if test is None else test.pk
