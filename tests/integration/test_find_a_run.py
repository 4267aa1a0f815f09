"""Finding a run from the home page's search box by part of its id, in a real browser; and
what the page says when nothing matches. Screenshots at 1440x900 and 390x844 go with the
role tours' (``LEDGER_TEST_ARTIFACTS``)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from core.roles import Role
from tests.integration.test_role_tours import PHONE, member, shoot, start_at_home

pytestmark = pytest.mark.django_db(transaction=True)


def recorded(record, tenant, *run_ids: str) -> None:
    started = timezone.now() - timedelta(minutes=30)
    record(tenant, *[{"run_id": run_id, "agent_id": "deploy-bot", "goal": "deploy",
                      "status": "succeeded", "started_at": started.isoformat(),
                      "ended_at": (started + timedelta(seconds=9)).isoformat()}
                     for run_id in run_ids])


def find(page, query: str) -> None:
    box = page.locator("form.ledger-find input[name=q]")
    box.fill(query)
    box.press("Enter")
    page.wait_for_load_state()


def test_a_reader_finds_a_run_by_part_of_its_id_from_the_home_page(live_server, page, login,
                                                                   acme, record):
    member("reader", acme, Role.VIEW_LEDGER)
    recorded(record, acme, "deploy-2026-12-05-9f3e", "deploy-2026-12-06-a1b2", "unrelated-run")
    start_at_home(live_server, page, login, "reader")

    find(page, "2026-12")  # the middle of two ids
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 2
    assert "run_id (contains)" in rows.first.inner_text()
    shoot(page, "find-by-part")

    page.locator("#result_list a", has_text="deploy-2026-12-06-a1b2").click()
    page.wait_for_url(f"{live_server.url}/runs/acme/deploy-2026-12-06-a1b2/")
    find(page, "DEPLOY-2026-12-05")  # the start of one, in the wrong case: straight there
    page.wait_for_url(f"{live_server.url}/runs/acme/deploy-2026-12-05-9f3e/")
    shoot(page, "find-timeline")


def test_nothing_found_says_why_and_leads_to_the_filtered_runs_list(live_server, page, login,
                                                                    acme, record):
    member("reader", acme, Role.VIEW_LEDGER)
    recorded(record, acme, "deploy-2026-12-06-a1b2")
    start_at_home(live_server, page, login, "reader")

    find(page, "zq")
    hint = page.locator("#no-match")
    assert "zq" in hint.inner_text()
    assert "3 characters" in hint.inner_text()
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow} px wider than the screen"
    shoot(page, "find-no-match")

    hint.locator("a", has_text="runs list").click()
    page.wait_for_url(f"{live_server.url}/admin/runs/run/")
    page.fill("#started_from", "2000-01-01")
    page.locator("form.started-between button").click()
    page.wait_for_url("**/admin/runs/run/?started_from=2000-01-01*")
    assert "deploy-2026-12-06-a1b2" in page.locator("#result_list").inner_text()
    shoot(page, "runs-list-filters")
