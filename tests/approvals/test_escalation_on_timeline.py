"""An escalated request says on its run's timeline what was actually delivered (issue #13):
which channels reached approvers and which failed, never "notified" when nothing arrived."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from approvals.models import NotificationDelivery
from approvals.services import escalate_overdue, request_approval
from runs.models import Annotation, AnnotationKind

pytestmark = pytest.mark.django_db


@pytest.fixture
def waiting(acme, alice, record, make_run):
    run = make_run()
    record(acme, run)
    acme.approval_escalate_minutes, acme.approval_timeout_minutes = 10, 60
    acme.save()
    request = request_approval(acme, tool="send_email", action_class="exfil",
                               arguments={"to": "x@example.com"}, run_id=run["run_id"],
                               requested_by="mailer")
    return run, request


def escalation_note(run_id: str) -> Annotation:
    return Annotation.objects.get(run__run_id=run_id, annotation_kind=AnnotationKind.APPROVAL,
                                  data__event="escalated")


def seen_on_timeline(client, user, run_id: str, note: Annotation) -> str:
    client.force_login(user)
    page = client.get(reverse("run-timeline", args=["acme", run_id])).content.decode()
    row = re.search(rf'<tr[^>]* id="annotation-{note.annotation_id}".*?</tr>', page, re.S)
    assert row is not None
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(0)))


def test_an_escalation_nobody_received_says_so(waiting, alice, client, settings):
    settings.LEDGER_NOTIFIER = "approvals.notify.WebhookNotifier"
    settings.LEDGER_NOTIFY_WEBHOOK_URL = "http://127.0.0.1:9/nothing-listens"
    run, request = waiting
    assert escalate_overdue(timezone.now() + timedelta(minutes=11))["escalated"] == 1
    [delivery] = NotificationDelivery.objects.filter(request=request, event="escalated")
    assert not delivery.delivered

    note = escalation_note(run["run_id"])
    assert note.data["deliveries"] == [{"channel": "webhook", "route": None,
                                        "delivered": False, "detail": delivery.detail}]
    seen = seen_on_timeline(client, alice, run["run_id"], note)
    assert "no approver was reached" in seen
    assert f"webhook failed ({delivery.detail})" in seen


def test_an_escalation_names_the_channels_that_delivered(waiting, alice, client, settings):
    from django.core import mail

    alice.email = "alice@acme.example"
    alice.save()
    settings.LEDGER_NOTIFIER = "approvals.notify.EmailNotifier"
    run, _ = waiting
    escalate_overdue(timezone.now() + timedelta(minutes=11))
    assert len(mail.outbox) == 1

    note = escalation_note(run["run_id"])
    assert [d["delivered"] for d in note.data["deliveries"]] == [True]
    seen = seen_on_timeline(client, alice, run["run_id"], note)
    assert "email delivered (1 recipient(s))" in seen
    assert "no approver was reached" not in seen
