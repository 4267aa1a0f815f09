"""Ledger rows are append-only: the application refuses to change or remove them."""

import pytest

from runs.models import AppendOnlyViolation, Run, ToolCall


@pytest.fixture
def recorded(acme, record, make_run):
    record(acme, make_run())
    return ToolCall.objects.first()


def test_saving_a_stored_row_is_refused(recorded):
    recorded.status = "succeeded" if recorded.status == "failed" else "failed"
    with pytest.raises(AppendOnlyViolation):
        recorded.save()


def test_deleting_a_row_is_refused(recorded):
    with pytest.raises(AppendOnlyViolation):
        recorded.delete()


def test_queryset_update_and_delete_are_refused(recorded):
    with pytest.raises(AppendOnlyViolation):
        ToolCall.objects.filter(pk=recorded.pk).update(output={"changed": True})
    with pytest.raises(AppendOnlyViolation):
        ToolCall.objects.all().delete()
    with pytest.raises(AppendOnlyViolation):
        Run.objects.all().update(goal="rewritten")
    assert ToolCall.objects.filter(pk=recorded.pk).exists()


def test_only_a_runs_tip_may_move(recorded):
    with pytest.raises(ValueError, match="only"):
        Run.objects.advance_tip(recorded.run_id, goal="rewritten")
