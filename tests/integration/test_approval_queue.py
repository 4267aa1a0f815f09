"""The approver queue in a real browser: approve, reject with a justification, and the
four-eyes refusal of one's own request."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest, Status
from approvals.services import request_approval

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def requests(acme, alice, record, make_run):
    run = make_run()
    record(acme, run)
    refund = request_approval(acme, tool="refund_payment", action_class="write",
                              arguments={"amount_cents": 50000,
                                         "api_token": "sk_live_4eC39HqLyjWDarjtT1zdp7dc"},
                              run_id=run["run_id"], requested_by="billing-bot")
    upload = request_approval(acme, tool="upload_report", action_class="delete",
                              arguments={"bucket": "s3://reports"}, requested_by="exporter")
    own = request_approval(acme, tool="send_email", action_class="write",
                           arguments={"to": "x@example.com"}, requester=alice,
                           requested_by="alice")
    return run, refund, upload, own


def test_approve_reject_and_four_eyes(live_server, page, login, alice, requests):
    run, refund, upload, own = requests
    login("alice")
    page.goto(f"{live_server.url}/approvals/")
    cards = page.locator(".request")
    assert cards.count() == 3
    # riskiest first: the delete, then the writes, oldest first
    assert cards.first.get_attribute("id") == f"request-{upload.pk}"
    refund_card = page.locator(f"#request-{refund.pk}")
    assert run["goal"] in refund_card.inner_text()
    assert "sk_live_4eC39HqLyjWDarjtT1zdp7dc" not in page.content()  # redacted per clearance
    assert refund_card.locator(".redacted").count() == 1

    refund_card.locator("button[value=approve]").click()
    page.wait_for_load_state()
    assert "approved" in page.locator(".messagelist").inner_text()

    upload_card = page.locator(f"#request-{upload.pk}")
    upload_card.locator("button[value=reject]").click()
    page.wait_for_load_state()
    assert "justification is required" in page.locator(".messagelist").inner_text()
    page.locator(f"#request-{upload.pk} textarea").fill("reports stay in the EU bucket")
    page.locator(f"#request-{upload.pk} button[value=reject]").click()
    page.wait_for_load_state()
    assert "rejected" in page.locator(".messagelist").inner_text()

    own_card = page.locator(f"#request-{own.pk}")
    assert "four-eyes" in own_card.inner_text()
    # not offered: the service would refuse it (tests/approvals/test_caused_by_you.py posts it)
    assert own_card.locator("button[value=approve]").count() == 0

    statuses = dict(ApprovalRequest.objects.values_list("pk", "status"))
    assert statuses == {refund.pk: Status.APPROVED, upload.pk: Status.REJECTED,
                        own.pk: Status.PENDING}
    assert page.locator(".request").count() == 1
