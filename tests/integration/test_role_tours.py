"""Each role starts at the home page and reaches its work by clicking, never by typing a URL,
in a real browser; the home page fits a phone's width. Screenshots at 1440x900 and 390x844
are kept as test artifacts (``LEDGER_TEST_ARTIFACTS``, default ``data/test-artifacts``)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone
from playwright.sync_api import expect

from approvals.models import ApprovalRequest, Status
from approvals.services import request_approval
from core.roles import Role
from core.services import grant_role
from incidents.services import open_incident

pytestmark = pytest.mark.django_db(transaction=True)
ARTIFACTS = Path(os.environ.get("LEDGER_TEST_ARTIFACTS", "data/test-artifacts")) / "role-tours"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 900}


def member(username: str, tenant: Any, *roles: str) -> User:
    user = User.objects.create_user(username, password="pw-for-tests-only", is_staff=True)
    for role in roles:
        grant_role(user, role, tenant)
    return user


def shoot(page: Any, name: str, folder: Path = ARTIFACTS) -> None:
    """The page at 1440x900 and at 390x844, kept in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.screenshot(path=str(folder / f"{name}-{label}.png"), full_page=True)
    page.set_viewport_size(DESKTOP)


def seed_the_demo(*usernames: str) -> None:
    """The demo as ``make demo`` seeds it (its jobs run in this process, as in the seed), with
    the test's password for ``usernames``."""
    from tests.celery_conf import celery_conf

    with celery_conf(task_always_eager=True):  # what the seed queues on commit runs here
        call_command("seed_demo", runs=6)
    for username in usernames:
        user = User.objects.get(username=username)
        user.set_password("pw-for-tests-only")
        user.save()


def start_at_home(live_server: Any, page: Any, login: Any, username: str) -> None:
    login(username)
    page.locator("#site-name a").click()  # the brand leads home
    page.wait_for_url(f"{live_server.url}/")


def test_an_approver_decides_from_the_home_page(live_server, page, login, acme):
    member("approver", acme, Role.APPROVE)
    waiting = request_approval(acme, tool="refund_payment", action_class="write",
                               arguments={"amount_cents": 50000}, requested_by="billing-bot")
    start_at_home(live_server, page, login, "approver")
    shoot(page, "approver-home")

    page.locator("#panel-approvals a", has_text="refund_payment").click()
    card = page.locator(f"#request-{waiting.pk}")
    card.locator("textarea").fill("matches invoice 7")
    card.locator("button[value=approve]").click()
    page.wait_for_load_state()
    assert "approved" in page.locator(".messagelist").inner_text()
    assert ApprovalRequest.objects.get(pk=waiting.pk).status == Status.APPROVED
    shoot(page, "approver-queue")


def test_an_operator_reaches_an_open_incident_from_the_home_page(live_server, page, login, acme):
    operator = member("operator", acme, Role.VIEW_LEDGER, Role.OPERATE)
    incident = open_incident(acme, "Refunds sent twice", by=operator)
    start_at_home(live_server, page, login, "operator")
    shoot(page, "operator-home")

    page.locator("#panel-incidents a", has_text="Refunds sent twice").click()
    page.wait_for_url(f"{live_server.url}/incidents/acme/{incident.pk}/")
    assert "Refunds sent twice" in page.content()
    page.locator("nav.ledger-nav a", has_text="Divergences").click()
    page.wait_for_url(f"{live_server.url}/divergences/")
    shoot(page, "operator-incident")


def test_an_operator_follows_the_demos_incident_to_its_replay_and_partial_rollback(
        live_server, page, login, demo_tool_server, capsys):
    seed_the_demo("operator")
    start_at_home(live_server, page, login, "operator")

    page.locator("#panel-incidents a", has_text="Refunds sent twice").click()
    page.locator("li.linked-replay a").click()  # the sandbox replay: it diverged
    # A click waits for the navigation to commit, not for the page to be parsed: wait for rows.
    expect(page.locator("td.replayed", has_text="pending_review")).to_have_count(2)  # two refunds
    shoot(page, "operator-demo-replay")
    page.go_back()
    page.locator("li.linked-call a", has_text="refund_payment").click()
    page.wait_for_url(f"{live_server.url}/runs/acme/acme-refund-1042/#tool_call-"
                      "acme-refund-1042-t3.1")
    duplicate = page.locator("#tool_call-acme-refund-1042-t3\\.1")
    assert "partial: side effects remain" in duplicate.inner_text()
    shoot(page, "operator-demo-rollback")


def test_an_operator_works_the_runbook_from_the_home_page(
        live_server, page, login, demo_tool_server, capsys):
    """Debug, replay (sandbox, until a step), freeze and close: the runbook's operator steps,
    every one reached by clicking from the home page."""
    from incidents.models import Incident
    from operations.models import Replay
    from policies.services import frozen_tools
    from tests.celery_conf import celery_conf

    seed_the_demo("operator")
    start_at_home(live_server, page, login, "operator")
    page.locator("#panel-incidents a", has_text="Refunds sent twice").click()
    page.wait_for_url(re.compile(r"/incidents/acme/\d+/$"))
    incident_url = page.url
    incident = Incident.objects.get(pk=int(incident_url.rstrip("/").rsplit("/", 1)[-1]))
    page.locator("li.linked-run a").first.click()  # the incident's run: its timeline
    expect(page.locator("#replay-form")).to_have_count(1)
    with celery_conf(task_always_eager=True):
        page.locator("#replay-form input[name=until_step]").fill("2")
        page.locator("#replay-form input[type=submit]").click()
        page.wait_for_url("**/replays/**")
    replay = Replay.objects.order_by("-id")[0]
    assert (replay.mode, replay.until_step) == ("sandbox", 2)
    shoot(page, "operator-runbook-replay")

    page.locator("nav.ledger-nav a", has_text="Incidents").click()
    page.locator(f'a[href="{incident_url.replace(live_server.url, "")}"]').first.click()
    page.select_option("form.act select[name=tool]", "send_email")
    page.select_option("form.act select[name=mode]", "deny")
    page.locator("#freeze").click()
    assert frozen_tools(incident.tenant).get("send_email") == "deny"
    page.select_option("#remediation", index=1)
    page.locator("form.act textarea[name=note]").last.fill("refund reversed; tool frozen")
    page.locator("#close").click()
    incident.refresh_from_db()
    assert incident.status == "closed"
    shoot(page, "operator-runbook-closed")


def test_an_auditor_downloads_the_demos_finished_export(live_server, page, login,
                                                      demo_tool_server, capsys, tmp_path):
    from core import signing
    from exports.models import AuditExport
    from exports.verify import verify_bundle
    from tests.celery_conf import celery_conf

    seed_the_demo("auditor")
    start_at_home(live_server, page, login, "auditor")
    page.locator("nav.ledger-nav a", has_text="Exports").click()
    with page.expect_download() as downloading:
        page.locator("a.download").first.click()
    bundle = tmp_path / downloading.value.suggested_filename
    downloading.value.save_as(bundle)
    assert verify_bundle(bundle, signing.public_key_b64()).ok

    # the runbook's step: a tenant- and time-bounded export, strict, requested here
    before = AuditExport.objects.count()
    with celery_conf(task_always_eager=True):
        page.select_option("select[name=tenant]", "acme")
        page.locator("input[name=window_from]").fill("2026-01-01T00:00")
        page.locator("input[name=window_to]").fill("2027-01-01T00:00")
        page.locator("#request-export").click()
        page.wait_for_load_state()
    assert AuditExport.objects.count() == before + 1, page.locator(
        "form.request-export").inner_text()
    requested = AuditExport.objects.order_by("-id")[0]
    assert (requested.redaction_level, requested.status) == ("strict", "done")
    shoot(page, "auditor-export-requested")


def test_a_governor_reviews_backtests_and_publishes_the_demos_draft(
        live_server, page, login, demo_tool_server, capsys):
    """governor wrote acme-baseline v2; governor2 reviews it from the home page: what it
    changes, a condition checked as typed and tried on a recorded call, a back-test, then
    publishes it (four-eyes: not its author)."""
    from policies.models import BackTest, PolicyVersion
    from runs.models import ToolCall
    from tests.celery_conf import celery_conf

    seed_the_demo("governor2")
    draft = PolicyVersion.objects.get(policy__name="acme-baseline", status="draft")
    start_at_home(live_server, page, login, "governor2")
    shoot(page, "governor-home")
    page.locator("#panel-governance a", has_text="acme-baseline v2").click()
    page.wait_for_url(f"**/admin/policies/policyversion/{draft.pk}/change/")
    page.wait_for_load_state()  # measured once the page is there, not mid-navigation
    assert page.evaluate("document.documentElement.scrollWidth") <= DESKTOP["width"]
    shoot(page, "governor-draft")

    condition = page.locator("textarea.rule-condition:not([name*=__prefix__])").last
    condition.fill("args.amount_cents >")
    check = page.locator(".condition-check").last
    check.filter(has_text="syntax error").wait_for()
    condition.fill("args.amount_cents > 50000")
    check.filter(has_text="valid condition").wait_for()
    call = ToolCall.objects.filter(tenant=draft.tenant, tool__name="refund_payment")[0]
    page.locator(".condition-try input").last.fill(call.call_id)
    page.locator(".condition-try button").last.click()
    outcome = page.locator(".condition-outcome").last
    outcome.filter(has_text="match").wait_for()
    assert call.run.run_id in outcome.inner_text()
    shoot(page, "governor-condition-tried")

    page.locator("a", has_text="what this version changes").click()
    expect(page.locator('tr.rule-added[data-rule="large refunds need a person"]')).to_have_count(1)
    shoot(page, "governor-diff")
    page.go_back()

    with celery_conf(task_always_eager=True):  # the worker's part runs as the page queues it
        page.locator("a", has_text="Back-test this version").click()
        page.locator("#backtest-form input[type=submit]").click()
        page.locator("#backtest-status", has_text="done").wait_for()
    test = BackTest.objects.get(version=draft)
    assert page.locator("#backtest-changed").inner_text().startswith(f"{test.changed} call")
    shoot(page, "governor-backtest")

    page.locator("nav.ledger-nav a", has_text="Policies").click()
    page.locator(f'input[name="_selected_action"][value="{draft.pk}"]').check()
    page.select_option("select[name=action]", "publish")
    page.locator("button[name=index]").click()
    assert "Published acme-baseline v2" in page.locator(".messagelist").inner_text()
    assert PolicyVersion.objects.get(pk=draft.pk).status == "published"
    shoot(page, "governor-published")


def test_an_auditor_reaches_exports_from_the_navigation(live_server, page, login, acme):
    member("auditor", acme, Role.EXPORT)
    start_at_home(live_server, page, login, "auditor")
    nav = page.locator("nav.ledger-nav").inner_text()
    assert "Exports" in nav
    assert "Approvals" not in nav  # only what their roles use
    page.locator("nav.ledger-nav a", has_text="Exports").click()
    page.wait_for_url(f"{live_server.url}/exports/")
    shoot(page, "auditor-exports")


def test_a_reader_opens_a_failed_run_from_the_home_page(live_server, page, login, acme, record):
    member("reader", acme, Role.VIEW_LEDGER)
    started = timezone.now() - timedelta(minutes=5)
    record(acme, {"run_id": "run-failed-1", "agent_id": "billing-agent", "goal": "refund 7",
                  "status": "failed", "started_at": started.isoformat(),
                  "ended_at": (started + timedelta(seconds=2)).isoformat()})
    start_at_home(live_server, page, login, "reader")
    page.locator("#panel-failed-runs a", has_text="run-failed-1").click()
    page.wait_for_url(f"{live_server.url}/runs/acme/run-failed-1/")
    shoot(page, "reader-timeline")


def test_the_home_page_fits_a_phone_without_scrolling_sideways(live_server, page, login, acme):
    member("everyone", acme, *[role.value for role in Role])
    request_approval(acme, tool="a_tool_with_a_rather_long_name_for_a_phone_screen",
                     action_class="exfil", arguments={}, requested_by="agent")
    start_at_home(live_server, page, login, "everyone")
    page.set_viewport_size(PHONE)
    overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"{overflow} px wider than the screen"
    shoot(page, "everyone-home")
