"""A tool call's optional ``tool_call_ref`` in an export: there when recorded, absent when not
(as in the content the hash commits to), the same on every database."""

from __future__ import annotations

import copy
import tarfile

import orjson

from core.canonical import content_hash
from core.cli_support import EXIT_OK
from ledger_portal.cli import main

from ..runs.test_tool_call_ref import PINNED_TOOL_CALL_CONTENT_HASH, RUN


def test_exported_tool_calls_carry_the_ref_only_when_recorded(acme, alice, record, export_dirs,
                                                             tmp_path, capsys):
    with_ref = copy.deepcopy(RUN)
    with_ref["run_id"] = "pinned-run-2"
    with_ref["tool_calls"][0].update(call_id="pinned-call-2", tool_call_ref="call_abc")
    record(acme, RUN, with_ref)
    bundle = tmp_path / "acme.tar"
    # Unredacted: only there does a record carry the hashes of its content.
    assert main(["--as", "alice", "export", "--tenant", "acme", "--from",
                 "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z",
                 "--redaction-level", "none", "--justification", "hash check",
                 "-o", str(bundle)]) == EXIT_OK
    capsys.readouterr()
    with tarfile.open(bundle) as tar:
        member = tar.extractfile("records.jsonl")
        assert member is not None
        lines = [orjson.loads(line) for line in member.read().splitlines()]
    calls = {}
    for line in lines:
        if line.get("type") == "tool_call":
            calls[line["data"]["call_id"]] = line["data"]
    assert set(calls) == {"pinned-call", "pinned-call-2"}, lines[:3]
    assert "tool_call_ref" not in calls["pinned-call"]
    assert calls["pinned-call"]["content_hash"] == PINNED_TOOL_CALL_CONTENT_HASH
    assert calls["pinned-call-2"]["tool_call_ref"] == "call_abc"
    for row in calls.values():  # each row is the content its hash commits to
        content = {k: v for k, v in row.items() if k not in ("seq", "content_hash",
                                                             "chain_hash")}
        assert content_hash({"kind": "tool_call", **content}) == row["content_hash"]
