"""The OpenTelemetry SDK's BatchSpanProcessor often exports a trace's children in one request
and its root in the next (or spreads a trace over three). The request that completes traces
costs a fixed number of SQL queries however many traces it completes: the count for 5 traces
equals the count for 50 (one query per kind of work, not one per trace)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.models import Tenant
from core.services import issue_api_key
from runs.governance_log import setting_up
from runs.models import OtlpSpan, OtlpSpanState, Run, Tool, ToolCall
from runs.otlp.assembly import run_id_for

from . import spans as s

pytestmark = pytest.mark.django_db

Post = Callable[[bytes], None]


def _poster(tenant: Tenant, agents: list[str] | None = None) -> Post:
    with setting_up():
        Tool.objects.create(tenant=tenant, name="get_weather", action_class="read")
        Tool.objects.create(tenant=tenant, name="send_email", action_class="write")
        _, key = issue_api_key(tenant, "otel", ["ingest"], agent_ids=agents or ())

    def post(body: bytes) -> None:
        response = Client().post("/v1/traces", data=body, content_type="application/x-protobuf",
                                 headers={"Authorization": f"Bearer {key}"})
        assert response.status_code == 200, response.content

    return post


def _traces(n: int) -> list[tuple[str, list[Any]]]:
    return [s.agent_trace() for _ in range(n)]


def _queries(post: Post, body: bytes) -> int:
    """The SQL statements ``body``'s request makes. On SQLite one bulk insert is several
    INSERTs (Django splits it at SQLite's bound-parameter limit): consecutive INSERTs into the
    same table count once there. PostgreSQL counts every statement."""
    with CaptureQueriesContext(connection) as ctx:
        post(body)
    statements = [q["sql"] for q in ctx.captured_queries]
    if connection.vendor != "sqlite":
        return len(statements)
    heads = [sql.split(" (", 1)[0] if sql.startswith("INSERT") else sql for sql in statements]
    return sum(1 for i, head in enumerate(heads)
               if not (head.startswith("INSERT") and i and heads[i - 1] == head))


def _all_recorded(tenant: Tenant, traces: list[tuple[str, list[Any]]]) -> None:
    """Every trace is a closed run with its 3 calls; no span of them waits any more."""
    run_ids = [run_id_for(trace_id) for trace_id, _ in traces]
    runs = Run.objects.filter(tenant=tenant, run_id__in=run_ids)
    assert sorted(runs.values_list("status", flat=True)) == ["succeeded"] * len(traces)
    assert ToolCall.objects.filter(run__in=runs).count() == 2 * len(traces)
    assert not OtlpSpan.objects.filter(trace__trace_id__in=[t for t, _ in traces],
                                       state=OtlpSpanState.PENDING).exists()


def _split(post: Post, tenant: Tenant, n: int) -> int:
    """Children of n traces in one request, their roots in the next: the roots' queries."""
    traces = _traces(n)
    post(s.protobuf(*[span for _, spans in traces for span in spans[:-1]]))
    count = _queries(post, s.protobuf(*[spans[-1] for _, spans in traces]))
    _all_recorded(tenant, traces)
    return count


def _three_requests(post: Post, tenant: Tenant, n: int) -> int:
    """Model calls in one request, tool calls in the next, roots in the third."""
    traces = _traces(n)
    post(s.protobuf(*[spans[0] for _, spans in traces]))
    post(s.protobuf(*[span for _, spans in traces for span in spans[1:-1]]))
    count = _queries(post, s.protobuf(*[spans[-1] for _, spans in traces]))
    _all_recorded(tenant, traces)
    return count


def _roots_beside_next_children(post: Post, tenant: Tenant, n: int) -> int:
    """As the batch processor sends a steady stream: each request carries the roots of the
    previous request's traces and the children of the next ones."""
    done, waiting = _traces(n), _traces(n)
    post(s.protobuf(*[span for _, spans in done for span in spans[:-1]]))
    count = _queries(post, s.protobuf(*[spans[-1] for _, spans in done],
                                      *[span for _, spans in waiting for span in spans[:-1]]))
    _all_recorded(tenant, done)
    post(s.protobuf(*[spans[-1] for _, spans in waiting]))
    return count


@pytest.mark.parametrize("shape", [_split, _three_requests, _roots_beside_next_children])
def test_the_request_completing_traces_costs_the_same_queries_for_5_or_50(acme, shape):
    post = _poster(acme)
    shape(post, acme, 2)  # the agent and the tenant's first run exist from here on
    at_5 = shape(post, acme, 5)
    at_50 = shape(post, acme, 50)
    assert at_50 == at_5


def test_a_key_bound_to_agents_narrows_traces_at_the_same_cost_for_5_or_50(acme):
    """A key bound to agents binds each new trace to them: not one UPDATE per trace."""
    post = _poster(acme, agents=["agent-weather-1"])

    def both_requests(n: int) -> int:
        traces = _traces(n)
        count = _queries(post, s.protobuf(*[span for _, spans in traces
                                             for span in spans[:-1]]))
        count += _queries(post, s.protobuf(*[spans[-1] for _, spans in traces]))
        _all_recorded(acme, traces)
        return count

    both_requests(2)
    assert both_requests(50) == both_requests(5)


def test_completing_split_traces_costs_what_whole_traces_cost_plus_marking_the_children(acme):
    """The request carrying the roots reads the waiting children with the rest of the buffer
    (no query of their own) and leaves the rows of traces it did not change alone; beyond what
    the same traces sent whole cost, it only marks the children with their outcome: one UPDATE
    on PostgreSQL, one per kind of outcome elsewhere (here model calls and tool calls)."""
    post = _poster(acme)
    _split(post, acme, 2)  # the agent and the tenant's first run exist from here on
    whole = _traces(5)
    at_once = _queries(post, s.protobuf(*[span for _, spans in whole for span in spans]))
    _all_recorded(acme, whole)
    marking = 1 if connection.vendor == "postgresql" else 2
    assert _split(post, acme, 5) == at_once + marking
