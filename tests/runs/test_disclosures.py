"""Every view of ledger data below strict redaction is on the record: the tenant's governance
log gets a ``disclosure`` annotation naming who read what, through which face, at which
level, before anything is shown (timeline page, API, ``ledger show``). Strict views are not
annotated: they disclose nothing a redaction rule hides."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from ledger_portal.cli import main
from runs.annotations import GOVERNANCE_RUN_ID
from runs.models import Annotation


@pytest.fixture
def run(acme, record, make_run) -> dict[str, Any]:
    recorded = make_run()
    record(acme, recorded)
    return recorded


def disclosures(acme) -> list[Annotation]:
    return list(Annotation.objects.filter(tenant=acme, annotation_kind="disclosure",
                                          run__run_id=GOVERNANCE_RUN_ID).order_by("seq"))


def test_the_timeline_page_below_strict_is_annotated(acme, alice, run, client):
    client.force_login(alice)
    page = reverse("run-timeline", args=["acme", run["run_id"]])
    assert client.get(page).status_code == 200
    assert disclosures(acme) == []  # strict: nothing disclosed
    assert client.get(page, {"redaction": "none"}).status_code == 200
    (note,) = disclosures(acme)
    assert (note.author, note.data["level"]) == (alice, "none")
    assert note.data["viewing"] == f"run {run['run_id']} (timeline page)"


def test_the_api_below_strict_is_annotated(acme, alice, run, user_client):
    client = user_client(alice)
    answer = client.get(reverse("api:run-detail", args=[run["run_id"]]),
                        {"redaction": "standard"})
    assert answer.status_code == 200
    (note,) = disclosures(acme)
    assert note.data["level"] == "standard"
    assert note.data["viewing"].endswith("(API)")
    assert run["run_id"] in note.data["viewing"]


def test_ledger_show_below_strict_is_annotated(acme, alice, run):
    assert main(["--as", "alice", "show", run["run_id"], "--redaction-level", "none"]) == 0
    (note,) = disclosures(acme)
    assert note.data["viewing"] == f"run {run['run_id']} (ledger show)"
    assert note.author == alice


def test_a_refused_level_discloses_nothing_and_records_nothing(acme, bob, run, user_client):
    from core.services import grant_role

    grant_role(bob, "view_ledger", acme)
    answer = user_client(bob).get(reverse("api:run-detail", args=[run["run_id"]]),
                                  {"redaction": "none"})
    assert answer.status_code == 403
    assert disclosures(acme) == []
