"""A legal hold placed while retention runs is never lost: either it lands first and keeps its
run, or retention removed the run first and the hold is refused, saying so. Never a hold on a
run that same retention run removed, and never a deadlock (PostgreSQL, real threads)."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from runs import retention
from runs.models import LegalHold, Run

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LATER = timedelta(days=31)


@pytest.fixture
def due_run_id(acme: Any, record: Any, make_run: Any) -> str:
    """A closed run of acme, which keeps runs 30 days: due for removal ``LATER``."""
    acme.retention_days = 30
    acme.save()
    run = make_run(acme.slug)
    run["status"], run["ended_at"] = "succeeded", timezone.now().isoformat()
    record(acme, run)
    return str(run["run_id"])


def _in_thread(target: Any, outcome: dict[str, Any], name: str) -> threading.Thread:
    def run() -> None:
        try:
            outcome[name] = target()
        except BaseException as error:  # collected, asserted below
            outcome[name] = error
        finally:
            connection.close()
    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_hold_placed_while_retention_removes_its_run_is_refused_not_lost(
        acme, alice, due_run_id, monkeypatch):
    run_id = due_run_id
    deciding = threading.Event()
    hold_asked = threading.Event()
    real_check = retention.not_intact

    def slow_check(tenant: Any, pks: list[int]) -> set[int]:
        # Retention has chosen what to remove and not removed it yet: a hold comes in now.
        deciding.set()
        hold_asked.wait(timeout=10)
        threading.Event().wait(0.5)  # the hold gets as far as it can before this commits
        return real_check(tenant, pks)

    monkeypatch.setattr(retention, "not_intact", slow_check)
    outcome: dict[str, Any] = {}
    remover = _in_thread(lambda: retention.apply_retention(acme, timezone.now() + LATER),
                         outcome, "retention")
    assert deciding.wait(timeout=30)
    holder = _in_thread(lambda: retention.place_legal_hold(acme, by=alice, reason="matter 7",
                                                           run_id=run_id), outcome, "hold")
    hold_asked.set()
    remover.join(timeout=60)
    holder.join(timeout=60)
    assert not remover.is_alive()
    assert not holder.is_alive()

    assert outcome["retention"].removed_runs == 1
    assert not Run.objects.filter(run_id=run_id).exists()
    # Before: the hold was created for a run that this retention run had just removed.
    assert isinstance(outcome["hold"], ValidationError), outcome["hold"]
    assert "no run" in str(outcome["hold"])
    assert not LegalHold.objects.filter(run_id=run_id).exists()


def test_a_hold_that_lands_first_keeps_its_run_from_that_retention_run(
        acme, alice, due_run_id, monkeypatch):
    run_id = due_run_id
    placing = threading.Event()
    go_on = threading.Event()
    real_annotate = retention.annotate  # type: ignore[attr-defined]  # the name retention calls

    def slow_annotate(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("data", {}).get("legal_hold"):  # the hold's note: it is not committed
            placing.set()
            go_on.wait(timeout=10)
            threading.Event().wait(0.5)  # retention starts meanwhile
        return real_annotate(*args, **kwargs)

    monkeypatch.setattr(retention, "annotate", slow_annotate)
    outcome: dict[str, Any] = {}
    holder = _in_thread(lambda: retention.place_legal_hold(acme, by=alice, reason="matter 8",
                                                           run_id=run_id), outcome, "hold")
    assert placing.wait(timeout=30)
    remover = _in_thread(lambda: retention.apply_retention(acme, timezone.now() + LATER),
                         outcome, "retention")
    go_on.set()
    holder.join(timeout=60)
    remover.join(timeout=60)

    assert isinstance(outcome["hold"], LegalHold), outcome["hold"]
    assert not isinstance(outcome["retention"], BaseException), outcome["retention"]
    assert Run.objects.filter(run_id=run_id).exists()
