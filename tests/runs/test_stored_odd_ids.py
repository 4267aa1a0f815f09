"""Runs stored before ids were restricted (with ``/``, ``#``, spaces, CR/LF in their ids) never
break a page: the admin run list, its search and the find page answer 200."""

from __future__ import annotations

import pytest
from django.urls import reverse

from runs.ingest_schema import BatchIn, parse_batch
from runs.services import ingest_batch

pytestmark = pytest.mark.django_db

ODD_IDS = ["a/b", "a#b c", "a\r\nb", 'a"b<c>']


@pytest.fixture
def odd_runs(acme, make_run):
    """Ingested past today's schema, as older versions of the portal let them in."""
    runs = []
    for odd in ODD_IDS:
        [good] = parse_batch({"runs": [make_run()]}).runs
        runs.append(good.model_copy(update={"run_id": odd}))
    ingest_batch(acme, BatchIn.model_construct(runs=runs), recorded_by="legacy")
    return ODD_IDS


def test_the_admin_run_list_and_its_search_answer_200(acme, alice, odd_runs, client):
    client.force_login(alice)
    url = reverse("admin:runs_run_changelist")
    assert client.get(url).status_code == 200
    for odd in odd_runs:
        assert client.get(url, {"q": odd}).status_code == 200


def test_the_find_page_answers_200_for_every_odd_id(acme, alice, odd_runs, client):
    client.force_login(alice)
    for odd in odd_runs:
        response = client.get(reverse("find-run"), {"q": odd})
        assert response.status_code in (200, 302), (odd, response.status_code)


def test_the_approval_queue_answers_200(acme, alice, odd_runs, client):
    from approvals.services import request_approval
    from core.roles import Role
    from core.services import grant_role

    grant_role(alice, Role.APPROVE, acme)
    for odd in odd_runs:
        request_approval(acme, tool="lookup", action_class="read", arguments={}, run_id=odd,
                         requested_by="agent")
    client.force_login(alice)
    response = client.get(reverse("approval-queue"))
    assert response.status_code == 200
    assert b"a#b c" in response.content


def test_the_incident_page_answers_200(acme, alice, odd_runs, client):
    from core.roles import Role
    from core.services import grant_role
    from incidents.services import link_to_incident, open_incident

    grant_role(alice, Role.OPERATE, acme)
    incident = open_incident(acme, "odd ids", by=alice)
    link_to_incident(incident, by=alice, run_ids=odd_runs)
    client.force_login(alice)
    response = client.get(reverse("incident-page", args=["acme", incident.pk]))
    assert response.status_code == 200
