"""The run timeline page in a real browser: find a run, expand a tool call, see a redacted
field labelled with its classification, follow a retry."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def incident_run(acme, record, make_run):
    run = make_run()
    first = run["tool_calls"][0]
    first.update(
        status="failed", output=None, error={"type": "TimeoutError", "message": "no answer"},
        input={"api_token": "sk_live_4eC39HqLyjWDarjtT1zdp7dc", "report": "x" * 900,
               "customer": {"email": "ada.lovelace@example.com"}},
        classifications={"input.api_token": "secret"})
    retry = {**first, "call_id": first["call_id"] + "-r2", "attempt": 2,
             "retry_of": first["call_id"], "status": "succeeded", "error": None,
             "output": {"ok": True}}
    run["tool_calls"].insert(1, retry)
    record(acme, run)
    return run, first, retry


def test_find_expand_redacted_and_follow_a_retry(live_server, page, login, alice, incident_run):
    run, first, retry = incident_run
    login("alice")

    page.fill("input[name=q]", run["run_id"])
    page.click("text=Find run")
    page.wait_for_url(f"**/runs/acme/{run['run_id']}/")
    assert page.locator("h2").first.inner_text() == run["goal"]

    row = page.locator(f"[id='tool_call-{first['call_id']}']")
    assert "error" in row.get_attribute("class")
    big = row.locator("details.payload-input")
    assert big.get_attribute("open") is None  # a large payload starts collapsed
    big.locator("summary").click()
    assert big.get_attribute("open") is not None

    secret = big.locator(".redacted[data-label=secret]")
    assert secret.first.is_visible()
    assert "[redacted:secret]" in secret.first.inner_text()
    html = page.content()
    assert "sk_live_4eC39HqLyjWDarjtT1zdp7dc" not in html
    assert "ada.lovelace@example.com" not in html
    assert page.locator("#redaction-level").inner_text() == "strict"

    row.locator("a.retry-link").first.click()
    page.wait_for_url(f"**#tool_call-{retry['call_id']}")
    retry_row = page.locator(f"[id='tool_call-{retry['call_id']}']")
    assert retry_row.is_visible()
    assert "retry of" in retry_row.inner_text()


def test_another_tenants_run_is_not_found(live_server, page, login, charlie, incident_run):
    run, _, _ = incident_run
    login("charlie")
    response = page.goto(f"{live_server.url}/runs/acme/{run['run_id']}/")
    assert response.status == 404
    page.goto(f"{live_server.url}/runs/find/?q={run['run_id']}")
    assert "No run in your tenants matches" in page.content()
