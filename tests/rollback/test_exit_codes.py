"""``ledger rollback``'s exit code says whether the compensation worked: a failed or partial
rollback is ``EXIT_INCOMPLETE`` (5), never 0."""

from __future__ import annotations

from typing import Any

import pytest

from core.cli_support import EXIT_INCOMPLETE, EXIT_OK
from ledger_portal.cli import main
from operations.models import Rollback
from runs.models import Tool

pytestmark = pytest.mark.django_db(transaction=True)  # the queued task runs on commit


@pytest.mark.usefixtures("eager")
@pytest.mark.parametrize(("answers", "status"), [
    (((500, {"error": "down"}),), "failed"),
    (((200, {"compensated": False, "remaining_side_effects": "refund already settled"}),),
     "partial"),
])
def test_a_rollback_that_does_not_succeed_is_not_exit_0(
        acme, alice, refunds, compensating, capsys, answers: tuple[Any, ...], status: str):
    compensating(Tool.objects.get(tenant=acme, name="refund_payment"), *answers)
    code = main(["--as", "alice", "rollback", "--call-id", "run-refunds-c2", "--wait", "5"])
    assert Rollback.objects.get().status == status, capsys.readouterr()
    assert code == EXIT_INCOMPLETE


@pytest.mark.usefixtures("eager")
def test_a_rollback_that_succeeds_is_exit_0(acme, alice, refunds, compensating):
    compensating(Tool.objects.get(tenant=acme, name="refund_payment"), (200, {"ok": True}))
    code = main(["--as", "alice", "rollback", "--call-id", "run-refunds-c2", "--wait", "5"])
    assert code == EXIT_OK
