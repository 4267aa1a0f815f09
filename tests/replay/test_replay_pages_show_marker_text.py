"""The replay and divergence pages show a redacted value as its marker text
(``[redacted:secret]``), never as a Python dict."""

from __future__ import annotations

import pytest
from django.urls import reverse

from operations.replay import start_replay

from .scenario import RUN_ID, recorded_run, same_as_recorded, stored_run, walk, wire_tools

pytestmark = pytest.mark.django_db

SECRET = "sk_live_ClxyGS0UdCyLPFhg1R6FylBSlO"


@pytest.fixture
def diverged_to_a_secret(acme, alice, record, tool_server):
    record(acme, recorded_run(RUN_ID))
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-secret", same_as_recorded("c2", state=SECRET))})
    return walk(start_replay(stored_run(acme, RUN_ID), by=alice))


def _no_dict_text(page: str) -> None:
    assert SECRET not in page
    assert "[redacted:secret]" in page
    assert "&#x27;redacted&#x27;" not in page
    assert "&#x27;reason&#x27;" not in page


def test_the_replay_page_prints_markers_as_text(diverged_to_a_secret, alice, client):
    client.force_login(alice)
    _no_dict_text(client.get(reverse("replay-detail", args=["acme", diverged_to_a_secret.pk])
                             ).content.decode())


def test_the_divergence_list_prints_markers_as_text(diverged_to_a_secret, alice, client):
    client.force_login(alice)
    _no_dict_text(client.get(reverse("divergence-list")).content.decode())
