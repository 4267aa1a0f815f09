"""GET /metrics counts OTLP spans by what became of them: accepted into the buffer, deferred
(kept pending until the trace's root or its quiet period), rejected as malformed."""

from __future__ import annotations

import pytest

from tests.core.test_metrics import TOKEN, scrape, value

from . import spans as s

pytestmark = pytest.mark.django_db


def test_spans_waiting_for_their_root_are_counted_as_deferred(acme, otlp_post, client,
                                                              settings):
    settings.LEDGER_METRICS_TOKEN = TOKEN
    settings.LEDGER_OTLP_QUIET_SECONDS = 30
    _, (chat, weather, email, root) = s.agent_trace()
    before = scrape(client)
    otlp_post(acme, s.protobuf(chat, weather))  # no root yet: both wait
    middle = scrape(client)
    otlp_post(acme, s.protobuf(email, root))  # the root: the whole trace is recorded
    after = scrape(client)

    def moved(since: dict, until: dict, outcome: str) -> float:
        return (value(until, "ledger_otlp_spans_total", outcome=outcome)
                - value(since, "ledger_otlp_spans_total", outcome=outcome))

    assert (moved(before, middle, "accepted"), moved(before, middle, "deferred")) == (2, 2)
    assert (moved(middle, after, "accepted"), moved(middle, after, "deferred")) == (2, 0)
