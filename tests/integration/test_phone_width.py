"""Every portal page fits a 390 px phone screen: nothing makes the page scroll sideways (a
wide table scrolls inside its own box)."""

from __future__ import annotations

import pytest

from approvals.services import request_approval
from core.roles import Role
from incidents.services import open_incident
from operations.replay import start_replay
from tests.integration.test_role_tours import PHONE, member, shoot
from tests.replay.scenario import RUN_ID, recorded_run, stored_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_portal_page_fits_a_phone(live_server, page, login, acme, record):
    person = member("everyone", acme, *[role.value for role in Role])
    record(acme, recorded_run())
    request_approval(acme, tool="refund_payment_with_a_long_tool_name", action_class="exfil",
                     arguments={"note": "x" * 300, "nested": {"deeper": ["a" * 120]}},
                     run_id=RUN_ID, requested_by="billing-agent")
    incident = open_incident(acme, "Refunds sent twice " * 5, by=person)
    replay = start_replay(stored_run(acme), by=person)
    login("everyone")
    page.set_viewport_size(PHONE)
    wide = {}
    for path in ["/", "/approvals/", "/incidents/", f"/incidents/acme/{incident.pk}/",
                 "/divergences/", "/runs/find/?q=billing", "/runs/find/?q=zq", "/exports/",
                 f"/runs/acme/{RUN_ID}/", f"/runs/acme/replays/{replay.pk}/"]:
        page.goto(f"{live_server.url}{path}")
        overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
        if overflow > 0:
            wide[path] = overflow
            shoot(page, "too-wide" + path.replace("/", "_").replace("?", "_"))
    assert wide == {}
