"""What a compensate hook answered is ledger content: the rollback API shows its outcome,
remaining side effects, attempt log and last error redacted at the reader's level (strict by
default), as exports do; a reader with view_unredacted may ask for it whole, on the record."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.models import Annotation, Tool

pytestmark = pytest.mark.usefixtures("eager")

CARD = "4111 1111 1111 1111"
KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"


@pytest.fixture
def leaky_rollback(acme, refunds, compensating, key_client, django_capture_on_commit_callbacks):
    compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                 (200, {"refund_reversed": True, "card": CARD, "note": f"used key {KEY}",
                        "remaining_side_effects": [f"email sent to ada@example.com ({CARD})"]}))
    client = key_client(acme, ["view_ledger", "operate"])
    with django_capture_on_commit_callbacks(execute=True):
        answer = client.post(reverse("api:rollback-list"), {"call_id": "run-refunds-c2"},
                             format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["rollbacks"][0]["id"]


def test_the_rollback_api_shows_the_hooks_answer_redacted(acme, leaky_rollback, key_client):
    client = key_client(acme, ["view_ledger"])
    detail = client.get(reverse("api:rollback-detail", kwargs={"rollback_id": leaky_rollback}))
    listed = client.get(reverse("api:rollback-list"))
    for answer in (detail, listed):
        assert answer.status_code == 200
        text = answer.content.decode()
        assert CARD not in text
        assert KEY not in text
        assert "ada@example.com" not in text
        assert "refund_reversed" in text


def test_view_unredacted_reads_it_whole_and_is_recorded(acme, alice, leaky_rollback,
                                                       user_client):
    answer = user_client(alice).get(
        reverse("api:rollback-detail", kwargs={"rollback_id": leaky_rollback}),
        {"redaction": "none"})
    assert answer.status_code == 200
    assert answer.json()["outcome"]["card"] == CARD
    assert Annotation.objects.filter(tenant=acme, annotation_kind="disclosure").exists()
