"""Admin changelists and the run detail endpoint cost a fixed number of queries, however many
rows there are: the count at 10 rows equals the count at 200."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from runs.models import ToolCall

LEDGER_CHANGELISTS = ["runs_run", "runs_step", "runs_modelcall", "runs_toolcall",
                      "runs_annotation", "runs_agent", "runs_tool", "ledger_portal_apikey"]


def _grow_to(tenant, record, make_run, tool_calls: int) -> None:
    while ToolCall.objects.filter(tenant=tenant).count() < tool_calls:
        record(tenant, make_run(tenant.slug))


def _queries(fetch) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = fetch()
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("changelist", LEDGER_CHANGELISTS)
def test_admin_changelist_queries_do_not_grow_with_rows(changelist, alice, acme, record,
                                                        make_run, client, api_key):
    client.force_login(alice)
    api_key(acme)
    url = reverse(f"admin:{changelist}_changelist")
    _grow_to(acme, record, make_run, 10)
    at_10 = _queries(lambda: client.get(url))
    _grow_to(acme, record, make_run, 200)
    at_200 = _queries(lambda: client.get(url))
    assert at_200 == at_10
    assert at_200 <= 12


def test_run_detail_queries_do_not_grow_with_the_run(acme, record, make_run, key_client):
    client = key_client(acme, ["view_ledger"])
    small = make_run()
    record(acme, small)
    big = make_run()
    template = big["tool_calls"][0]
    big["tool_calls"] = [{**template, "call_id": f"{big['run_id']}-c{i}", "retry_of": None,
                          "attempt": 1} for i in range(200)]
    record(acme, big)
    client.get(reverse("api:run-detail", args=[small["run_id"]]))  # warm the key-use cache
    at_small = _queries(lambda: client.get(reverse("api:run-detail", args=[small["run_id"]])))
    at_big = _queries(lambda: client.get(reverse("api:run-detail", args=[big["run_id"]])))
    assert at_small == at_big
    assert at_big <= 10


def test_ledger_changelists_never_offer_facet_counts(alice, acme, record, make_run, client):
    record(acme, make_run())
    client.force_login(alice)
    response = client.get(reverse("admin:runs_toolcall_changelist") + "?_facets=1")
    assert response.status_code == 200
    assert "Show counts" not in response.content.decode()
    assert response.context["cl"].add_facets is False
