"""Two approvers deciding the same request at once give one decision, not two."""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection

from approvals.models import ApprovalRequest, Status
from approvals.services import ApprovalError, decide_approval, request_approval
from runs.models import Annotation

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_two_approvers_at_once_give_one_decision(acme, alice, charlie):
    from django.contrib.auth.models import User

    from core.services import grant_role

    dave = User.objects.create_user("dave", password="pw-for-tests-only")
    grant_role(dave, "approve", acme)
    for _ in range(5):
        request = request_approval(acme, tool="refund_payment", action_class="write",
                                   arguments={"amount_cents": 50000})
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def decide(user, approve, request=request, outcomes=outcomes, barrier=barrier):
            try:
                barrier.wait(timeout=10)
                decide_approval(ApprovalRequest(pk=request.pk), by=user, approve=approve,
                                justification=f"{user.username} decided")
                outcomes.append("decided")
            except (ApprovalError, PermissionDenied) as exc:
                outcomes.append(f"refused: {exc}")
            finally:
                connection.close()

        threads = [threading.Thread(target=decide, args=(alice, True)),
                   threading.Thread(target=decide, args=(dave, False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(o.split(":")[0] for o in outcomes) == ["decided", "refused"]
        request.refresh_from_db()
        assert request.status in (Status.APPROVED, Status.REJECTED)
        assert request.votes.count() == 1
    assert Annotation.objects.filter(annotation_kind="approval").count() == 5
