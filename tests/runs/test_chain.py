"""Every stored record re-hashes to its chain link: what ingestion wrote is what it hashed."""

from __future__ import annotations

from core.canonical import GENESIS, chain_hash, content_hash
from runs.models import Annotation, ModelCall, Run, Step, ToolCall


def _records(run):
    related = {Step: ("run",), ModelCall: ("run", "step"),
               ToolCall: ("run", "step", "tool", "retry_of"), Annotation: ("run",)}
    rows = [r for model, rel in related.items()
            for r in model.objects.filter(run=run).select_related(*rel)]
    return sorted(rows, key=lambda r: r.seq)


def test_stored_chains_recompute_from_stored_content(acme, record, make_run):
    runs = [make_run() for _ in range(3)]
    record(acme, *runs)
    partial = make_run()
    record(acme, {**partial, "status": "running", "ended_at": None,
                  "tool_calls": partial["tool_calls"][:1]})
    record(acme, partial)  # appended in a second batch
    for run in Run.objects.select_related("agent", "replay_of"):
        assert run.content_hash == content_hash(run.ledger_content())
        link = chain_hash(GENESIS, 0, run.content_hash)
        for rec in _records(run):
            assert rec.content_hash == content_hash(rec.ledger_content()), (rec.kind, rec.seq)
            link = chain_hash(link, rec.seq, rec.content_hash)
            assert rec.chain_hash == link
        assert run.head_hash == link
