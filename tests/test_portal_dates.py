"""Portal pages show every moment one way, naming its time zone: "2026-12-06 13:40:05 UTC"
(issue #13). Agent content (payloads, shown as recorded) is not the portal's to format."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.services import request_approval
from exports.services import request_export
from incidents.services import open_incident
from operations.replay import start_replay
from tests.replay.scenario import RUN_ID, recorded_run, stored_run

pytestmark = pytest.mark.django_db

PORTAL_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC")
ANY_DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2})?(?:\.\d+)?"
                      r"(?: ?(?:[A-Z]{2,5}\b|[+-]\d{2}:?\d{2}|Z))?")


def test_every_portal_page_shows_dates_one_way_with_the_zone(acme, alice, record, client):
    record(acme, recorded_run(), recorded_run("run-refund-43"))  # two: find lists them
    request_approval(acme, tool="refund_payment", action_class="write", arguments={},
                     run_id=RUN_ID, requested_by="billing-agent")
    incident = open_incident(acme, "Refunds sent twice", by=alice)
    replay = start_replay(stored_run(acme), by=alice)
    now = timezone.now()
    request_export(acme, now - timedelta(days=1), now, by=alice, enqueue=False)
    client.force_login(alice)
    odd = {}
    for path in ["/approvals/", "/incidents/", f"/incidents/acme/{incident.pk}/",
                 "/divergences/", "/runs/find/?q=billing-agent", "/exports/",
                 f"/runs/acme/{RUN_ID}/", f"/runs/acme/replays/{replay.pk}/"]:
        response = client.get(path)
        assert response.status_code == 200, path
        page = re.sub(r"<(details|pre)\b.*?</\1>", "", response.content.decode(), flags=re.S)
        found = [d for d in ANY_DATE.findall(page) if not PORTAL_DATE.fullmatch(d)]
        if found:
            odd[path] = found
    assert odd == {}


def test_the_admin_shows_moments_in_the_same_format(acme, alice, client):
    """The admin's own pages too (Django's locale format was "Dec. 6, 2026, 2:12 p.m.")."""
    import re

    from policies.models import Policy
    from policies.services import create_draft

    draft = create_draft(Policy.objects.create(tenant=acme, name="tools"), by=alice,
                         change_note="x")
    client.force_login(alice)
    from django.urls import reverse

    page = client.get(reverse("admin:policies_policyversion_change", args=[draft.pk]))
    text = page.content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", text)
    assert "a.m." not in text
    assert "p.m." not in text
