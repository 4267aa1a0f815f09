"""The COPY generator (runs/sample_copy.py, ``bench.generate --copy``) writes the runs ingestion
would write for the same generated batches, chained the same way, so ``ledger verify`` passes
on a ten-million-call database made with it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from core.models import Tenant
from runs.annotations import GOVERNANCE_RUN_ID
from runs.ingest_schema import parse_batch
from runs.integrity import verify_tenant
from runs.models import ModelCall, Run, Step, ToolCall
from runs.sample_copy import _KINDS, CopyLoader, _Chunk, _kinds, copy_load_parallel
from runs.sample_runs import RunGenerator
from runs.services import ingest_batch

pytestmark = pytest.mark.postgres


def test_copied_runs_hash_as_ingested_ones_and_verify(db):
    copied = Tenant.objects.create(slug="copied", name="Copied")
    ingested = Tenant.objects.create(slug="ingested", name="Ingested")
    _KINDS.update(_kinds())
    loader = CopyLoader(copied, seed=3)
    loader.gen = RunGenerator("same", seed=3)  # both tenants get the same runs
    chunk = _Chunk()
    runs = [loader.gen.run() for _ in range(20)]
    for run in runs:
        loader.add_run(run, chunk, timezone.now())
    loader.write(chunk)
    fresh = RunGenerator("same", seed=3)
    ingest_batch(ingested, parse_batch({"runs": [fresh.run() for _ in range(20)]}),
                 recorded_by="generator")

    for model in (Run, Step, ModelCall, ToolCall):  # the closing notes' ids are random
        def chains(tenant: Tenant, model=model) -> list[tuple[str, str, int, str]]:
            run = "run_id" if model is Run else "run__run_id"
            return list(model.objects.filter(tenant=tenant).exclude(**{run: GOVERNANCE_RUN_ID})
                        .order_by(run, "seq")
                        .values_list(run, "content_hash", "seq", "chain_hash"))
        assert chains(copied) == chains(ingested), model.__name__
    assert ToolCall.objects.filter(tenant=copied).count() == sum(
        len(r["tool_calls"]) for r in runs)
    report = verify_tenant(copied)
    assert report.breaks == []
    assert report.runs >= 20  # and the governance log's


@pytest.mark.django_db(transaction=True)
def test_loaders_side_by_side_take_ids_in_any_order_without_deadlock_or_collision():
    """``copy_load_parallel``'s processes each hold one chunk's transaction open while they
    take id blocks for the tables in whatever order their runs need them."""
    import threading

    from django.db import connection, transaction

    from runs.sample_copy import _Ids

    meet = threading.Barrier(2, timeout=10)
    taken: dict[str, list[int]] = {"runs_run": [], "runs_step": []}
    failures: list[BaseException] = []

    def load(first: str, second: str) -> None:
        try:
            with transaction.atomic():
                ids = {first: _Ids(first), second: _Ids(second)}
                mine = {first: [ids[first].take()]}
                meet.wait()  # each now holds a block of its first table
                mine[second] = [ids[second].take() for _ in range(3)]
            for table, values in mine.items():
                taken[table].extend(values)
        except BaseException as exc:  # the main thread asserts there were none
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=load, args=("runs_run", "runs_step")),
               threading.Thread(target=load, args=("runs_step", "runs_run"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    for values in taken.values():
        assert len(values) == len(set(values))
    assert len(taken["runs_step"]) == len(taken["runs_run"]) == 4


@pytest.mark.postgres
def test_a_ledger_loaded_as_recorded_over_months_lies_in_their_partitions(transactional_db):
    from core.partitions import partitions

    # two processes (each its tenant): the months past are made once, before them
    rows = copy_load_parallel(["spread", "spread-2"], 3_000, seed=5, jobs=2, progress=False,
                              recorded_over_days=70)
    assert rows["runs_toolcall"] >= 3_000
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT tableoid::regclass::text FROM runs_toolcall")
        homes = {name for (name,) in cursor.fetchall()}
    # every month of the ten weeks has its records in its partition, none in the default one
    today = timezone.now().date()
    months = {f"runs_toolcall_p{today - timedelta(days=days):%Y%m}" for days in range(71)}
    assert homes == months
    assert homes <= {p.name for p in partitions()}
    assert verify_tenant(Tenant.objects.get(slug="spread")).breaks == []
