"""The tenant scope guard (tests/tenant_scope_guard.py) catches a request or a ``ledger``
command that reads a tenant's rows without saying which tenant, and lets the scoped shapes
pass: the attacks first, on a view and a command written here to be wrong."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.http import Http404, HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import path

from core.cli_support import EXIT_OK
from core.models import TenantOwned
from core.roles import Role
from exports.models import AuditExport, ExportPart, ExportShare
from ledger_portal.cli import main
from runs.models import Agent, Run, Step
from tests.tenant_scope_guard import schema, unscoped_tables


def unscoped_run(request: HttpRequest, pk: int) -> JsonResponse:
    run = Run.objects.get(pk=pk)  # the IDOR: any tenant's run by its number
    return JsonResponse({"run_id": run.run_id})


def steps_by_url_key(request: HttpRequest, pk: int) -> JsonResponse:
    # a foreign key from the URL is no better than a primary key from the URL
    return JsonResponse({"steps": Step.objects.filter(run_id=pk).count()})


def scoped_run(request: HttpRequest, pk: int) -> JsonResponse:
    if not Run.objects.for_user(request.user, Role.VIEW_LEDGER).filter(pk=pk).exists():
        raise Http404
    Run.objects.filter(pk=pk).values("status").get()  # the row exists() found in the scope
    run = get_object_or_404(Run.objects.for_user(request.user, Role.VIEW_LEDGER), pk=pk)
    with transaction.atomic():  # a service's re-fetch of a row it already read through the scope
        Run.objects.select_for_update().get(pk=run.pk)
    run.refresh_from_db()
    agent = run.agent  # a foreign key of a scoped row
    agent.save(update_fields=["description"])  # an UPDATE by the primary key of a row it read
    siblings = list(agent.runs.values_list("run_id", flat=True))  # a reverse manager
    steps = Step.objects.filter(run=run).count()  # children of a scoped row
    prefetched = Agent.objects.for_user(request.user, Role.VIEW_LEDGER).prefetch_related("runs")
    return JsonResponse({"run_id": run.run_id, "siblings": siblings, "steps": steps,
                         "agents": [len(a.runs.all()) for a in prefetched]})


urlpatterns = [
    path("unscoped/<int:pk>/", unscoped_run),
    path("steps/<int:pk>/", steps_by_url_key),
    path("scoped/<int:pk>/", scoped_run),
]


@pytest.fixture
def acme_run(acme, record, make_run):
    run = make_run()
    record(acme, run)
    return Run.objects.get(tenant=acme, run_id=run["run_id"])


@pytest.mark.urls(__name__)
def test_a_view_reading_a_run_by_its_number_alone_is_caught(acme_run, globex, charlie, client,
                                                           tenant_scope_guard):
    client.force_login(charlie)  # of globex, asking for acme's run
    assert client.get(f"/unscoped/{acme_run.pk}/").status_code == 200  # the leak itself
    [violation] = tenant_scope_guard.take()
    assert violation.tables == ["runs_run"]
    assert violation.entry == f"GET /unscoped/{acme_run.pk}/"
    assert '"runs_run"."id" = %s' in violation.sql
    assert any("in unscoped_run: run = Run.objects.get(pk=pk)" in f for f in violation.frames)
    assert "runs_run read without a tenant scope" in str(violation)


@pytest.mark.urls(__name__)
def test_a_foreign_key_taken_from_the_url_is_caught(acme_run, alice, client, tenant_scope_guard):
    client.force_login(alice)
    assert client.get(f"/steps/{acme_run.pk}/").status_code == 200
    assert [v.tables for v in tenant_scope_guard.take()] == [["runs_step"]]


@pytest.mark.urls(__name__)
def test_the_scoped_view_and_what_it_reaches_through_its_rows_pass(acme_run, alice, client,
                                                                   tenant_scope_guard):
    client.force_login(alice)
    response = client.get(f"/scoped/{acme_run.pk}/")
    assert response.status_code == 200
    assert response.json()["steps"] > 0
    assert tenant_scope_guard.take() == []


@pytest.mark.urls(__name__)
def test_a_superuser_sees_every_tenant_by_design(acme_run, globex, client, django_user_model,
                                                 tenant_scope_guard):
    root = django_user_model.objects.create_superuser("root", password="pw-for-tests-only")
    client.force_login(root)
    assert client.get(f"/unscoped/{acme_run.pk}/").status_code == 200
    assert tenant_scope_guard.take() == []


@pytest.mark.urls(__name__)
@pytest.mark.django_db(transaction=True)
def test_the_live_server_is_guarded_too(acme_run, live_server, tenant_scope_guard):
    import httpx2 as httpx

    answer = httpx.get(f"{live_server.url}/unscoped/{acme_run.pk}/", timeout=30)
    assert answer.status_code == 200  # answered on the server's thread, anonymously
    [violation] = tenant_scope_guard.take()
    assert (violation.entry, violation.tables) == (f"GET /unscoped/{acme_run.pk}/", ["runs_run"])


def test_a_command_reading_without_a_scope_is_caught(acme_run, alice, monkeypatch, capsys,
                                                     tenant_scope_guard):
    def cmd_runs(args, user):
        print(Run.objects.filter(run_id=acme_run.run_id).count())
        return EXIT_OK

    monkeypatch.setattr("ledger_portal.cli.cmd_runs", cmd_runs)
    assert main(["--as", "alice", "runs"]) == EXIT_OK
    [violation] = tenant_scope_guard.take()
    assert (violation.entry, violation.tables) == ("ledger runs", ["runs_run"])


def test_the_real_command_passes(acme_run, alice, capsys, tenant_scope_guard):
    assert main(["--as", "alice", "show", acme_run.run_id, "--json"]) == EXIT_OK
    assert tenant_scope_guard.take() == []


def test_outside_a_request_or_command_nothing_is_checked(acme_run, tenant_scope_guard):
    assert Run.objects.get(pk=acme_run.pk) == acme_run  # test set-up, tasks
    assert tenant_scope_guard.take() == []


@pytest.mark.tenant_scope_exempt(reason="shows the opt-out")
def test_an_exempt_test_has_no_guard(tenant_scope_guard):
    assert tenant_scope_guard is None


def test_the_tenant_owned_tables_are_the_tenant_owned_models():
    assert schema().tenant_owned == {m._meta.db_table for m in apps.get_models()
                                     if issubclass(m, TenantOwned)}
    assert "runs_run" in schema().tenant_owned
    assert "ledger_portal_tenant" not in schema().tenant_owned


def _sql(queryset):
    return queryset.query.sql_with_params()


@pytest.mark.parametrize(("queryset", "unscoped"), [
    (lambda: Run.objects.filter(tenant_id__in=[1, 2]), []),
    (lambda: Run.objects.filter(pk=5), ["runs_run"]),
    (lambda: Run.objects.filter(status="running"), ["runs_run"]),
    (lambda: Step.objects.filter(run__tenant__slug="acme"), []),  # joined to a named tenant
    (lambda: Step.objects.filter(run__tenant__name="Acme"), ["runs_step", "runs_run"]),
    (lambda: Step.objects.filter(tenant_id=1).select_related("run__replay_of"), []),
    (lambda: Run.objects.filter(Q(tenant_id=1) | Q(status="x")), ["runs_run"]),  # OR
    (lambda: Run.objects.filter(tenant_id=1).filter(
        Exists(Step.objects.filter(run=OuterRef("pk")))), []),  # correlated to a scoped row
    (lambda: Run.objects.filter(status="x").filter(
        Exists(Step.objects.filter(run=OuterRef("pk")))), ["runs_run", "runs_step"]),
    (lambda: Run.objects.filter(pk__in=Step.objects.filter(tenant_id=3).values("run_id")), []),
    (lambda: Run.objects.filter(pk__in=Step.objects.filter(status="x").values("run_id")),
     ["runs_run", "runs_step"]),
    (lambda: Run.objects.filter(pk=5).select_for_update(), ["runs_run"]),
    (lambda: Run.objects.filter(Q(tenant_id=1, status="x") | Q(tenant_id=2)), []),  # each branch
    (lambda: ExportPart.objects.filter(export__tenant_id=1).select_related("export"), []),
], ids=lambda value: "" if callable(value) else repr(value))
def test_the_rule(db, queryset, unscoped):
    sql, params = _sql(queryset())
    assert unscoped_tables(sql, params) == unscoped


def test_keys_already_read_scope_a_lookup(db):
    sql, params = _sql(Step.objects.filter(run_id__in=[7, 8]).order_by())
    assert unscoped_tables(sql, params, {"runs_run": {"7", "8"}}) == []
    assert unscoped_tables(sql, params, {"runs_run": {"7"}}) == ["runs_step"]  # 8 was not read
    assert unscoped_tables(sql, params, {"runs_step": {"7", "8"}}) == ["runs_step"]


def test_a_row_hanging_off_a_tenant_owned_row_is_known_by_its_key_too(db):
    sql, params = _sql(ExportPart.objects.filter(pk=3).select_related("export"))
    assert unscoped_tables(sql, params) == ["exports_auditexport"]
    assert unscoped_tables(sql, params, {"exports_exportpart": {"3"}}) == []


def test_the_acting_users_own_grants_are_in_scope(db):
    shared = AuditExport.objects.filter(pk__in=ExportShare.objects.filter(user=5).values(
        "export_id"))
    sql, params = _sql(shared)
    assert unscoped_tables(sql, params, user_pk=5) == []
    assert unscoped_tables(sql, params, user_pk=6) == ["exports_auditexport",
                                                       "exports_exportshare"]


def test_inserts_are_not_checked():
    assert unscoped_tables('INSERT INTO "runs_run" ("tenant_id") VALUES (%s)', [1]) == []
