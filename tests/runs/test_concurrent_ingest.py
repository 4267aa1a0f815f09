"""Concurrent batches on PostgreSQL: one run row, one chain, no shared sequence numbers."""

from __future__ import annotations

import copy
import threading

import pytest
from django.db import connection

from runs.ingest_schema import parse_batch
from runs.models import Annotation, ModelCall, Run, Step, ToolCall
from runs.services import ingest_batch

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _in_threads(*jobs):
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(jobs))

    def work(job):
        try:
            barrier.wait(timeout=10)
            job()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors


def test_the_same_new_run_sent_twice_at_once_lands_once(acme, make_run):
    run = make_run()
    batch = parse_batch({"runs": [run]})
    _in_threads(lambda: ingest_batch(acme, batch), lambda: ingest_batch(acme, batch))
    assert Run.objects.filter(run_id=run["run_id"]).count() == 1
    assert ToolCall.objects.count() == len(run["tool_calls"])


def test_concurrent_appends_to_one_run_get_distinct_sequence_numbers(acme, make_run):
    run = make_run()
    head = {**run, "status": "running", "ended_at": None, "steps": run["steps"],
            "model_calls": [], "tool_calls": []}
    ingest_batch(acme, parse_batch({"runs": [head]}))
    parts = []
    for i in range(4):
        part = copy.deepcopy(head)
        part["steps"] = run["steps"]
        part["tool_calls"] = [{**c, "call_id": f"{c['call_id']}-p{i}", "retry_of": None,
                               "attempt": 1} for c in run["tool_calls"]]
        parts.append(parse_batch({"runs": [part]}))
    _in_threads(*[lambda p=p: ingest_batch(acme, p) for p in parts])
    stored = Run.objects.get(run_id=run["run_id"])
    seqs = sorted(
        s for model in (Step, ModelCall, ToolCall, Annotation)
        for s in model.objects.filter(run=stored).values_list("seq", flat=True))
    assert seqs == list(range(1, stored.last_seq + 1))
    assert ToolCall.objects.filter(run=stored).count() == 4 * len(run["tool_calls"])
