"""Every admin change list and change page redacts what agents recorded: the classes are
enumerated from ``admin.site._registry``, so a new admin is covered the day it is registered.
The planted corpus (tests/runs/redaction_corpus.py) goes in through batch ingestion; even a
superuser reads only markers."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.runs.redaction_corpus import PLANTED, SECRETS, planted_run

pytestmark = pytest.mark.django_db

RUN_ID = "admin-leak-run"


@pytest.fixture
def planted(acme, record, admin_user) -> dict[str, Any]:
    from incidents.services import open_incident
    from policies.services import ProposedCall, decide_tool_call

    run = planted_run(RUN_ID, model_calls=5)
    run["steps"][0]["title"] = f"Investigate with {SECRETS[1].value}"
    run["annotations"] = [{"annotation_id": "a1", "kind": "note",
                           "body": f"the key was {SECRETS[2].value}",
                           "data": {"found": SECRETS[3].value}}]
    record(acme, run)
    for n, arguments in enumerate(({"token": SECRETS[4].value}, {SECRETS[5].value: "k"})):
        decide_tool_call(acme, ProposedCall("refund_payment", "write", arguments, run_id=RUN_ID,
                                            call_id=f"asked-{n}"), asked_by="agent")
    open_incident(acme, f"Leaked {SECRETS[6].value}", by=admin_user,
                  summary=f"found {SECRETS[7].value}", ticket_ids=[SECRETS[8].value])
    _governed(acme, admin_user)
    _deferred(acme, admin_user)
    return run


def _deferred(acme: Any, admin_user: Any) -> None:
    """Items kept back from a newer agent's batch, with secrets in what was received, in the
    reason (a field's name) and in a dismissal's justification."""
    from runs.deferred import dismiss_deferred
    from runs.deferred_batch import parse_for_tenant
    from runs.ingest import ingest_batch
    from runs.models import DeferredItem

    run = planted_run("admin-deferred-run", model_calls=1)
    run["tool_calls"][0]["reasoning"] = {"note": f"used {SECRETS[16].value}"}
    run["tool_calls"][0][f"x_{SECRETS[17].value}"] = 1
    run["tool_calls"][1]["action_class"] = "impersonate"
    run["tool_calls"][1]["input"] = {"token": SECRETS[18].value}
    batch, deferred = parse_for_tenant({"runs": [run]}, lenient=True)
    ingest_batch(acme, batch, recorded_by="agent", deferred=deferred)
    dismiss_deferred(DeferredItem.objects.order_by("id")[0], by=admin_user,
                     justification=f"matches {SECRETS[19].value}")


def _governed(acme: Any, admin_user: Any) -> None:
    """An exception whose justification quotes a secret, and a back-test of a draft."""
    from datetime import timedelta

    from django.contrib.auth.models import User
    from django.utils import timezone

    from policies.backtest import start_backtest
    from policies.exceptions import request_exception
    from policies.models import Policy
    from policies.services import create_draft, publish_policy_version
    from policies.tasks import run_backtest

    policy = Policy.objects.create(tenant=acme, name="admin-walk")
    published = publish_policy_version(create_draft(policy, by=admin_user, change_note="v1"),
                                       by=User.objects.create_superuser("second-governor"))
    now = timezone.now()
    request_exception(acme, by=admin_user, tool="refund_payment", policy_version=published,
                      justification=f"case of {SECRETS[15].value}", starts_at=now,
                      ends_at=now + timedelta(hours=1))
    test = start_backtest(create_draft(policy, by=admin_user, change_note="v2"),
                          now - timedelta(days=1), now + timedelta(days=1), by=admin_user)
    run_backtest.apply(args=(test.pk,))


def leaked(text: str) -> list[str]:
    return [value for value in PLANTED if value in text]


def _admin_pages(client: Any) -> dict[str, str]:
    """Every registered admin's change list and the change page of each of its objects."""
    pages: dict[str, str] = {}
    for model, model_admin in admin.site._registry.items():
        opts = model._meta
        name = f"admin:{opts.app_label}_{opts.model_name}"
        listing = reverse(f"{name}_changelist")
        response = client.get(listing)
        assert response.status_code == 200, listing
        pages[listing] = response.content.decode()
        for pk in model_admin.get_queryset(_request_of(client)).values_list("pk", flat=True)[:50]:
            url = reverse(f"{name}_change", args=[pk])
            response = client.get(url)
            assert response.status_code == 200, url
            pages[url] = response.content.decode()
    return pages


def _request_of(client: Any) -> Any:
    from django.test import RequestFactory

    request = RequestFactory().get("/")
    request.user = client.user
    return request


def test_no_admin_page_shows_a_planted_secret(planted, admin_user, client):
    client.force_login(admin_user)
    client.user = admin_user
    pages = _admin_pages(client)
    assert {url: leaked(body) for url, body in pages.items() if leaked(body)} == {}
    assert any("[redacted:secret]" in body for body in pages.values())
