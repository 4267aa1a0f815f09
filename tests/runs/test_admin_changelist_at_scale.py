"""The ledger's big changelists (tool calls, runs, annotations) page like small ones: no
``COUNT(*)`` over the whole table, no OFFSET over whole rows (a page's keys are picked by a
key-only subquery, its rows read by key), the last page holds the oldest rows, sorting works
both ways, and the tenant scope holds on every page.

The bounds are shrunk here (an exact count up to 4 rows, 2 rows a page) so a few dozen rows
stand for millions; the rules are the same.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
from django.contrib.admin.sites import site
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from core import admin_base
from core.roles import Role
from core.services import grant_role
from runs.governance_log import setting_up
from runs.models import Annotation, Run, ToolCall

PER_PAGE = 2
EXACT_UP_TO = 4
MODELS = [ToolCall, Run, Annotation]


@pytest.fixture
def small_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(admin_base, "EXACT_COUNT_UP_TO", EXACT_UP_TO)
    monkeypatch.setattr(admin_base, "SIDE_TABLE_FROM_OFFSET", EXACT_UP_TO)
    for model in MODELS:
        monkeypatch.setattr(site._registry[model], "list_per_page", PER_PAGE)


@pytest.fixture
def ledger(acme: Any, globex: Any, record: Any, make_run: Any) -> None:
    """Two tenants' runs, interleaved (ids alternate between tenants), each with a note."""
    for _ in range(8):
        for tenant in (acme, globex):
            run = make_run(tenant.slug)
            run["annotations"] = [{"annotation_id": f"{run['run_id']}-note", "body": "checked"}]
            record(tenant, run)
    if connection.vendor == "postgresql":
        # Beyond the exact count the pages are numbered by the planner's estimate: make it
        # these rows', as autovacuum would, not what a test before this one left (a test that
        # analysed 3,000 rows since rolled back made it 1,500 pages, the middle ones empty).
        with connection.cursor() as cursor:
            for model in MODELS:
                cursor.execute(f"ANALYZE {model._meta.db_table}")


@pytest.fixture
def superuser(db: Any) -> User:
    return User.objects.create_superuser("root", password="pw-for-tests-only")


@pytest.fixture
def viewer(acme: Any) -> User:
    """Staff with view_ledger on acme only."""
    with setting_up():
        user = User.objects.create_user("viewer", password="pw-for-tests-only", is_staff=True)
        grant_role(user, Role.VIEW_LEDGER, acme)
    return user


def _url(model: Any, query: str = "") -> str:
    return reverse(f"admin:runs_{model._meta.model_name}_changelist") + query


def _page(client: Any, model: type, query: str = "") -> tuple[Any, list[Any]]:
    response = client.get(_url(model, query))
    assert response.status_code == 200, response.content[:500]
    assert "?e=1" not in response.get("Location", "")
    cl = response.context["cl"]
    return cl, list(cl.result_list)


def _sort_param(cl: Any, field: str, descending: bool) -> str:
    index = list(cl.list_display).index(field)
    return f"o={'-' if descending else ''}{index}"


def _expected(model: Any, user: User, order: list[str]) -> list[int]:
    rows = model.objects.for_user(user, Role.VIEW_LEDGER).order_by(*order)
    return list(rows.values_list("pk", flat=True))


def _sort_field(model: type) -> str:
    return "recorded_at" if model is Annotation else "started_at"


ORDERINGS = [("", None), ("desc", True), ("asc", False)]


def _pages(count: int) -> list[int]:
    """The first pages, one in the middle, the last two."""
    return sorted(p for p in {1, 2, 3, count // 2, count - 1, count} if 1 <= p <= count)


def _case(model: type, client: Any, sort: bool | None) -> tuple[str, list[str]]:
    """The query string and the order it must show: the default (newest id first) or the
    sortable column either way (ties by id, the way the list breaks them)."""
    if sort is None:
        return "", ["-id"]
    cl, _ = _page(client, model)
    field = _sort_field(model)
    order = [f"-{field}", "-id"] if sort else [field, "id"]
    return "?" + _sort_param(cl, field, sort), order


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize(("label", "sort"), ORDERINGS, ids=[o[0] or "default" for o in ORDERINGS])
@pytest.mark.parametrize("who", ["superuser", "viewer"])
def test_every_page_shows_its_rows_in_order_and_the_last_the_oldest(
        model, label, sort, who, request, ledger, small_bounds, client):
    user = request.getfixturevalue(who)
    client.force_login(user)
    query, order = _case(model, client, sort)
    expected = _expected(model, user, order)
    assert len(expected) > EXACT_UP_TO + PER_PAGE  # more than the exact count covers
    sep = "&" if query else "?"
    cl, first = _page(client, model, query)
    assert [r.pk for r in first] == expected[:PER_PAGE]
    pages = cl.paginator.num_pages
    assert pages >= 3
    # The last page: the oldest rows, whatever the count (an estimate beyond the exact count)
    # makes of the pages before it.
    _, last = _page(client, model, f"{query}{sep}p={pages}")
    shown = [r.pk for r in last]
    assert shown
    assert shown == expected[-len(shown):]
    # The pages before it: exactly their slices (within the bound and beyond it).
    for number in _pages(pages)[:-1]:
        _, rows = _page(client, model, f"{query}{sep}p={number}")
        start = (number - 1) * PER_PAGE
        assert [r.pk for r in rows] == expected[start:start + PER_PAGE], f"page {number}"


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_a_viewer_never_sees_another_tenants_rows_on_any_page(model, ledger, small_bounds,
                                                             viewer, acme, client):
    client.force_login(viewer)
    queries = []
    for _, sort in ORDERINGS:
        query, _ = _case(model, client, sort)
        queries.append(query)
    for query in queries:
        cl, _ = _page(client, model, query)
        sep = "&" if query else "?"
        for number in _pages(cl.paginator.num_pages):
            _, rows = _page(client, model, f"{query}{sep}p={number}")
            assert rows
            assert {r.tenant_id for r in rows} == {acme.pk}, (query, number)


def _row_queries(model: Any, sql_list: list[str]) -> list[str]:
    table = model._meta.db_table
    return [sql for sql in sql_list if re.search(rf'FROM "{table}"', sql)]


def _offsets_outside_a_key_subquery(sql: str) -> list[str]:
    """Each ``OFFSET n`` (n > 0) of ``sql`` that is not in a subquery selecting one column."""
    wrong = []
    for found in re.finditer(r"OFFSET (\d+)", sql):
        if int(found.group(1)) == 0:
            continue
        opened = sql.rfind("(SELECT ", 0, found.start())
        selected = sql[opened:].split(" FROM ", 1)[0] if opened >= 0 else sql
        if opened < 0 or "," in selected:
            wrong.append(sql[max(0, found.start() - 200):found.end()])
    return wrong


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["superuser", "viewer"])
def test_no_page_counts_the_whole_table_or_offsets_over_whole_rows(
        model, who, request, ledger, small_bounds, client):
    user = request.getfixturevalue(who)
    client.force_login(user)
    table = model._meta.db_table
    pages = None
    for _, sort in ORDERINGS:
        query, _ = _case(model, client, sort)
        sep = "&" if query else "?"
        cl, _ = _page(client, model, query)
        pages = cl.paginator.num_pages
        for number in _pages(pages):
            with CaptureQueriesContext(connection) as captured:
                _page(client, model, f"{query}{sep}p={number}")
            sqls = _row_queries(model, [q["sql"] for q in captured.captured_queries])
            assert sqls
            for sql in sqls:
                if "COUNT(" in sql.upper():
                    # a capped count: a subquery with a LIMIT just past the exact bound
                    assert f"LIMIT {EXACT_UP_TO + 1}" in sql, sql
                # deep pages skip keys in a one-column subquery, never whole rows
                assert not _offsets_outside_a_key_subquery(sql), (
                    f"page {number}: OFFSET over whole rows of {table}:\n{sql}")
    assert pages is not None
    assert pages >= 3


@pytest.mark.postgres
@pytest.mark.parametrize("model", [ToolCall, Annotation], ids=lambda m: m.__name__)
def test_only_a_superusers_deep_plain_page_takes_its_keys_from_the_side_table(
        model, ledger, small_bounds, superuser, viewer, client):
    """In key order a partitioned table is a merge of every month's index; its side table of
    keys holds the same keys in one index, and the pages above show it gives the same rows.
    It is the whole table in key order only: a filter, a sort or a reader of fewer tenants
    asks for other rows, and the first pages cost the merge little."""
    keys = f'"{model._meta.db_table}_keys"'

    def reads_side_table(user: User, query: str) -> bool:
        client.force_login(user)
        with CaptureQueriesContext(connection) as captured:
            _, rows = _page(client, model, query)
        assert rows
        return any(keys in q["sql"] for q in captured.captured_queries)

    deep = f"p={EXACT_UP_TO // PER_PAGE + 1}"
    assert reads_side_table(superuser, f"?{deep}")
    assert not reads_side_table(superuser, "?p=1")
    assert not reads_side_table(viewer, f"?{deep}")
    cl, _ = _page(client, model)
    sort = _sort_param(cl, _sort_field(model), True)
    client.force_login(superuser)
    assert not reads_side_table(superuser, f"?{sort}&{deep}")
    field = "status" if model is ToolCall else "annotation_kind"
    commonest = Counter(model.objects.values_list(field, flat=True)).most_common(1)[0][0]
    assert not reads_side_table(superuser, f"?{field}={commonest}&{deep}")


def test_a_superusers_filtered_list_names_every_tenant_and_the_plain_list_does_not(
        ledger, small_bounds, superuser, acme, globex, client):
    """A filter's index leads with the tenant (``toolcall_tenant_status``): without the tenants
    named it is read whole, 480 ms for a status no call has among 10,000,000 tool calls. The
    plain list's order has an index of its own, which named tenants would make PostgreSQL
    leave."""
    client.force_login(superuser)
    named = f'"tenant_id" IN ({", ".join(str(pk) for pk in sorted([acme.pk, globex.pk]))})'

    def row_sql(query: str) -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            _page(client, ToolCall, query)
        return _row_queries(ToolCall, [q["sql"] for q in captured.captured_queries])

    filtered = row_sql("?status=cancelled")
    assert filtered
    assert all(named in sql for sql in filtered), filtered
    assert not any("tenant_id" in sql.split(" WHERE ", 1)[-1] for sql in row_sql("")
                   if " WHERE " in sql)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_show_all_is_not_offered_for_big_lists(model, ledger, small_bounds, superuser,
                                               client):
    client.force_login(superuser)
    cl, rows = _page(client, model, "?all=")
    assert cl.can_show_all is False
    assert len(rows) == PER_PAGE


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["superuser", "viewer"])
def test_the_lean_rows_are_the_html_django_renders(model, who, request, ledger, client):
    """The big lists render their rows without Django's per-cell machinery
    (core/admin_rows.py): cell for cell, the same HTML as ``items_for_result``."""
    from django.contrib.admin.templatetags.admin_list import items_for_result

    from core.admin_rows import rows

    client.force_login(request.getfixturevalue(who))
    for sort in (None, False):
        query, _ = _case(model, client, sort)
        cl, shown = _page(client, model, query)
        assert shown
        assert list(rows(cl)) == [list(items_for_result(cl, row, None)) for row in shown]
