"""`ledger verify` catches every kind of tampering, done below the application (raw SQL, as a
superuser bypassing the append-only triggers would), and names the first broken link."""

from __future__ import annotations

import orjson
import pytest

from core.cli_support import EXIT_OK, EXIT_TAMPERED
from ledger_portal.cli import main
from runs.integrity import seal_tenant_digest, verify_tenant
from runs.models import Run, TenantDigest, ToolCall
from tests.triggers import bypassing_triggers


@pytest.fixture
def ledger(acme, record, make_run):
    runs = [make_run() for _ in range(4)]
    for run in runs:
        run["status"], run["ended_at"] = "running", None
        run["tool_calls"] = [
            {**run["tool_calls"][0], "call_id": f"{run['run_id']}-x{i}", "retry_of": None,
             "attempt": 1} for i in range(5)]
    record(acme, *runs)
    return Run.objects.get(run_id=runs[1]["run_id"])


def calls(run: Run) -> list[ToolCall]:
    return list(ToolCall.objects.filter(run=run).order_by("seq"))


def only_break(acme):
    report = verify_tenant(acme)
    assert len(report.breaks) == 1, [str(b) for b in report.breaks]
    return report.breaks[0]


def test_an_untouched_ledger_verifies(acme, ledger, alice, capsys):
    seal_tenant_digest(acme)
    report = verify_tenant(acme)
    assert report.intact
    assert report.runs == 4
    assert report.digests == 1
    assert main(["--as", "alice", "verify", "--quiet"]) == EXIT_OK
    assert "intact" in capsys.readouterr().out


def test_flipping_one_byte_is_named_modified(acme, ledger):
    target = calls(ledger)[2]
    original = orjson.dumps(target.input).decode()
    at = original.index(':"') + 2  # the first character of the first string value
    tampered = original[:at] + ("x" if original[at] != "x" else "y") + original[at + 1:]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET input = %s WHERE id = %s", [tampered, target.pk])
    problem = only_break(acme)
    assert (problem.run_id, problem.seq, problem.problem) == (ledger.run_id, target.seq,
                                                              "modified")


def test_deleting_a_row_is_named_missing(acme, ledger):
    target = calls(ledger)[1]
    with bypassing_triggers() as cursor:
        cursor.execute("DELETE FROM runs_toolcall WHERE id = %s", [target.pk])
    problem = only_break(acme)
    assert (problem.seq, problem.problem) == (target.seq, "missing")


def test_a_missing_record_found_by_verify_is_a_chain_gap_waiting_for_reconciliation(
        acme, ledger, alice, capsys):
    from runs.models import DeferredItem

    target = calls(ledger)[1]
    with bypassing_triggers() as cursor:
        cursor.execute("DELETE FROM runs_toolcall WHERE id = %s", [target.pk])
    assert main(["--as", "alice", "verify", "--quiet"]) == EXIT_TAMPERED
    assert main(["--as", "alice", "verify", "--quiet"]) == EXIT_TAMPERED  # kept once
    assert "--source chain_gap" in capsys.readouterr().out
    gap = DeferredItem.objects.get(tenant=acme)
    assert (gap.source, gap.run_id, gap.payload["seq"]) == ("chain_gap", ledger.run_id,
                                                            target.seq)


def test_inserting_a_row_is_named_inserted(acme, ledger):
    target = calls(ledger)[1]
    with bypassing_triggers() as cursor:
        cursor.execute(
            "INSERT INTO runs_annotation (tenant_id, run_id, seq, content_hash, chain_hash, "
            "recorded_at, annotation_id, annotation_kind, target_call_id, body, data, "
            "author_label) VALUES (%s, %s, %s, %s, %s, %s, 'forged', 'note', '', "
            "'all fine here', '{}', 'intruder')",
            [target.tenant_id, ledger.pk, target.seq, target.content_hash, target.chain_hash,
             target.recorded_at])
    problem = only_break(acme)
    assert (problem.seq, problem.problem) == (target.seq, "inserted")


def test_swapping_two_rows_is_named_reordered(acme, ledger):
    first, second = calls(ledger)[1], calls(ledger)[3]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET seq = 99999 WHERE id = %s", [first.pk])
        cursor.execute("UPDATE runs_toolcall SET seq = %s WHERE id = %s", [first.seq, second.pk])
        cursor.execute("UPDATE runs_toolcall SET seq = %s WHERE id = %s", [second.seq, first.pk])
    problem = only_break(acme)
    assert (problem.seq, problem.problem) == (first.seq, "reordered")
    assert f"seq {second.seq} belongs here" in problem.detail


def drop_after(cursor, run: Run, seq: int) -> None:
    for table in ("runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation"):
        cursor.execute(f"DELETE FROM {table} WHERE run_id = %s AND seq > %s", [run.pk, seq])


def test_dropping_the_tail_is_named_missing(acme, ledger):
    with bypassing_triggers() as cursor:
        drop_after(cursor, ledger, ledger.last_seq - 2)
    problem = only_break(acme)
    assert (problem.seq, problem.problem) == (ledger.last_seq - 1, "missing")
    assert "tail" in problem.detail


def test_dropping_the_tail_and_rewinding_the_head_is_caught_by_the_digest(acme, ledger):
    seal_tenant_digest(acme)
    kept = calls(ledger)[-3]
    with bypassing_triggers() as cursor:
        drop_after(cursor, ledger, kept.seq)
        cursor.execute("UPDATE runs_run SET last_seq = %s, head_hash = %s WHERE id = %s",
                       [kept.seq, kept.chain_hash, ledger.pk])
    problem = only_break(acme)
    assert problem.problem == "missing"
    assert "digest #1" in problem.detail


def test_a_modified_digest_is_caught(acme, ledger):
    digest = seal_tenant_digest(acme)
    assert digest is not None
    heads = dict(digest.run_heads)
    heads[ledger.run_id] = [1, heads[ledger.run_id][1]]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_tenantdigest SET run_heads = %s WHERE id = %s",
                       [orjson.dumps(heads).decode(), digest.pk])
    problems = verify_tenant(acme).breaks
    assert [p.problem for p in problems] == ["digest"]
    assert "modified" in problems[0].detail


def test_verify_names_the_break_and_exits_nonzero(acme, ledger, alice, capsys):
    target = calls(ledger)[0]
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET status = 'denied' WHERE id = %s", [target.pk])
    assert main(["--as", "alice", "verify", "--tenant", "acme", "--quiet"]) == EXIT_TAMPERED
    out = capsys.readouterr().out
    assert f"BROKEN run {ledger.run_id} seq {target.seq}: modified" in out


def test_digests_chain_and_skip_when_nothing_moved(acme, ledger, record, make_run):
    first = seal_tenant_digest(acme)
    assert seal_tenant_digest(acme) is None
    record(acme, make_run())
    second = seal_tenant_digest(acme)
    assert second is not None
    assert first is not None
    assert second.previous_hash == first.digest_hash
    assert TenantDigest.objects.filter(tenant=acme).count() == 2
