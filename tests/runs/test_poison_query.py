"""A NUL character in a query string (which PostgreSQL text cannot hold) is a clear 400 on
every API list and page, never a 500; an id too long for a row id in a path is a 404."""

from __future__ import annotations

import pytest
from django.urls import reverse


@pytest.mark.parametrize("url", ["/api/v1/replays/", "/api/v1/runs/", "/api/v1/tool-calls/",
                                 "/api/v1/incidents/", "/api/v1/policy-trail/",
                                 "/api/v1/batches/"])
def test_a_nul_in_a_query_parameter_is_a_400_on_the_api(acme, alice, user_client, url):
    for query in ({"tenant": "\x00acme"}, {"run_id": "a\x00b"}, {"q\x00": "x"}):
        answer = user_client(alice).get(url, query)
        assert answer.status_code == 400, (url, query, answer.content[:200])
        assert "NUL" in answer.json()["detail"]
        assert answer.json()["errors"][0]["path"].startswith("query.")


def test_a_nul_in_a_query_parameter_is_a_400_on_a_page(alice, client):
    client.force_login(alice)
    answer = client.get(reverse("find-run"), {"q": "run\x00"})
    assert answer.status_code == 400


def test_a_row_id_beyond_64_bits_is_not_found(alice, user_client):
    api = user_client(alice)
    assert api.get("/api/v1/replays/123456789012345678901234/").status_code == 404
    assert api.post("/api/v1/replays/10128912010781440000/steps/1/follow-up/",
                    {"state": "open"}, format="json").status_code == 404
