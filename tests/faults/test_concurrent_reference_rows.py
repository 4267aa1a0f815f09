"""Concurrent batches that introduce the same new agents and tools all land (no 500)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from runs.ingest import ingest_batch
from runs.ingest_schema import parse_batch
from runs.models import Agent, Run, Tool

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

THREADS = 12
ROUNDS = 3


def test_concurrent_batches_with_the_same_new_agents_and_tools_all_land(acme, make_run):
    failures: list[BaseException] = []
    tool_names: set[str] = set()
    for round_no in range(ROUNDS):
        batches = []
        for seed in range(THREADS):
            # Its own id space per batch (ids carry the generator's prefix): only the agent
            # and the tools are shared.
            run = make_run(tenant_slug=f"r{round_no}b{seed}")
            run.pop("tenant", None)
            run["agent_id"] = f"agent-round-{round_no}"
            for j, call in enumerate(run["tool_calls"]):
                # Overlapping sets: each batch shares tools with its neighbours, so a batch can
                # meet a different concurrent creator on every try.
                call["tool"] = f"tool-round-{round_no}-{(seed + j) % THREADS}"
            tool_names.update(call["tool"] for call in run["tool_calls"])
            batches.append(parse_batch({"runs": [run]}))
        barrier = threading.Barrier(THREADS)

        def send(batch, barrier=barrier):
            try:
                barrier.wait(timeout=30)
                ingest_batch(acme, batch, recorded_by="test")
            except BaseException as error:  # collected, asserted below
                failures.append(error)
            finally:
                connection.close()

        threads = [threading.Thread(target=send, args=(b,)) for b in batches]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    assert Run.objects.filter(tenant=acme).count() == THREADS * ROUNDS
    assert Agent.objects.filter(tenant=acme, agent_id__startswith="agent-round-").count() == ROUNDS
    assert set(Tool.objects.filter(tenant=acme, name__startswith="tool-round-")
               .values_list("name", flat=True)) == tool_names
