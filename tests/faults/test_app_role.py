"""Append-only holds for the application's own database role.

The portal connects as a role that does not own the ledger tables (``LEDGER_APP_DB_ROLE``,
granted by ``core/db_roles.py``). As that role, a lone insider holding the app's
database credentials tries every way around the append-only rule; each is refused and the
ledger is untouched. What the portal itself does (recording, retention through the SECURITY
DEFINER function) still works as that role."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from core.db_roles import grant_app_role
from runs.integrity import verify_tenant
from runs.models import RemovalRecord, Run, ToolCall
from runs.retention import _sign_removal, apply_retention, place_legal_hold

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
ROLE = "ledger_app_test"
LATER = timedelta(days=31)


@pytest.fixture
def app_role() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [ROLE])
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {ROLE} LOGIN NOSUPERUSER")
    grant_app_role(ROLE)
    return ROLE


@contextmanager
def portal_as(role: str) -> Iterator[None]:
    """Django's own connection, as ``role``: what the deployed portal runs as."""
    settings_dict = connection.settings_dict
    owner = settings_dict["USER"]
    connection.close()
    settings_dict["USER"] = role
    try:
        yield
    finally:
        connection.close()
        settings_dict["USER"] = owner


def raw_as(role: str) -> psycopg.Connection[Any]:
    db = connection.settings_dict
    return psycopg.connect(host=db["HOST"] or "127.0.0.1", port=db["PORT"] or 5432,
                           dbname=db["NAME"], user=role, autocommit=True)


@pytest.fixture
def closed_and_due(acme, record, make_run) -> list[str]:
    acme.retention_days = 30
    acme.save()
    runs = [make_run() for _ in range(3)]
    for run in runs:
        run["status"], run["ended_at"] = "succeeded", timezone.now().isoformat()
    record(acme, *runs)
    return [run["run_id"] for run in runs]


ATTACKS = {
    "delete with the retention switch": "SET ledger.removal = 'retention'; "
                                        "DELETE FROM runs_toolcall",
    "delete a run": "DELETE FROM runs_run",
    "change a recorded output": "UPDATE runs_toolcall SET output = '{}'::jsonb",
    "change a run's identity": "UPDATE runs_run SET goal = 'nothing happened'",
    "truncate": "TRUNCATE runs_toolcall CASCADE",
    "disable the triggers": "ALTER TABLE runs_toolcall DISABLE TRIGGER ALL",
    "switch triggers off for the session": "SET session_replication_role = replica",
    "delete a removal record": "DELETE FROM runs_removalrecord",
    "delete a digest": "DELETE FROM runs_tenantdigest",
    "delete an integrity alarm": "DELETE FROM runs_integrityalarm",
    "replace the removal function": "CREATE OR REPLACE FUNCTION ledger_remove_runs(bigint) "
                                    "RETURNS integer LANGUAGE sql AS 'SELECT 0'",
    "drop the append-only trigger": "DROP TRIGGER ledger_append_only ON runs_toolcall",
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_the_app_role_cannot_get_around_append_only(attack, app_role, closed_and_due, acme):
    calls_before = ToolCall.objects.filter(tenant=acme).count()
    *setup, statement = ATTACKS[attack].split("; ")
    with raw_as(app_role) as conn:
        for step in setup:
            conn.execute(step)  # a role may set its own custom settings
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert ToolCall.objects.filter(tenant=acme).count() == calls_before
    assert verify_tenant(acme).intact


def test_a_forged_removal_record_cannot_remove_a_held_run(app_role, closed_and_due, acme,
                                                          alice):
    held = Run.objects.get(tenant=acme, run_id=closed_and_due[0])
    place_legal_hold(acme, by=alice, reason="litigation hold INC-9", run_id=held.run_id)
    with portal_as(app_role):
        acme.refresh_from_db()
        forged = _sign_removal(acme, timezone.now() + LATER, {
            held.run_id: [held.last_seq, held.head_hash, 1]})
        with raw_as(app_role) as conn, pytest.raises(psycopg.errors.RestrictViolation,
                                                     match="only 0 are closed"):
            conn.execute("SELECT ledger_remove_runs(%s)", [forged.pk])
    assert Run.objects.filter(pk=held.pk).exists()


def test_a_removal_record_whose_count_is_wrong_removes_nothing(app_role, closed_and_due, acme):
    run = Run.objects.get(tenant=acme, run_id=closed_and_due[2])
    with portal_as(app_role):
        forged = _sign_removal(acme, timezone.now() + LATER, {
            run.run_id: [run.last_seq, run.head_hash, 1]})  # it has more records than that
        with raw_as(app_role) as conn, pytest.raises(psycopg.errors.RestrictViolation,
                                                     match="would be removed"):
            conn.execute("SELECT ledger_remove_runs(%s)", [forged.pk])
    assert ToolCall.objects.filter(run=run).exists()


def test_the_portal_records_and_applies_retention_as_the_app_role(app_role, acme, record,
                                                                  make_run, closed_and_due):
    with portal_as(app_role):
        run = make_run()
        run["status"], run["ended_at"] = "succeeded", timezone.now().isoformat()
        record(acme, run)  # ingestion: inserts and the run's tip moving
        acme.refresh_from_db()
        report = apply_retention(acme, timezone.now() + LATER)
    assert report.removed_runs == 4
    assert not Run.objects.filter(tenant=acme, run_id__in=[*closed_and_due, run["run_id"]])
    [removal] = RemovalRecord.objects.filter(tenant=acme)
    assert sorted(removal.removed_runs) == sorted([*closed_and_due, run["run_id"]])
    assert verify_tenant(acme).intact


def privileges(role: str, table: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT p FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE',"
                       "'TRUNCATE']) p WHERE has_table_privilege(%s, %s, p)", [role, table])
        return {p for (p,) in cursor.fetchall()}


def test_migrate_grants_the_app_role_on_every_table(app_role, settings):
    from core.db_roles import grant_after_migrate

    with connection.cursor() as cursor:
        cursor.execute(f"REVOKE ALL ON runs_toolcall, ledger_portal_tenant FROM {ROLE}")
    assert privileges(ROLE, "runs_toolcall") == set()
    settings.LEDGER_APP_DB_ROLE = ROLE
    grant_after_migrate(sender=None)  # what `manage.py migrate` runs when it is done
    assert privileges(ROLE, "runs_toolcall") == {"SELECT", "INSERT"}
    assert privileges(ROLE, "ledger_portal_tenant") == {"SELECT", "INSERT", "UPDATE",
                                                        "DELETE"}
    assert privileges(ROLE, "django_migrations") == {"SELECT"}


def test_a_superusers_deep_admin_pages_read_the_side_table_of_keys_as_the_app_role(
        app_role, acme, record, make_run, client, monkeypatch):
    """From an offset of SIDE_TABLE_FROM_OFFSET the superuser's plain list takes its page's
    keys from ``<table>_keys`` (core/partition_keys.py). The role was granted nothing on the
    side tables, so the deep pages of the tool calls failed with ``permission denied``."""
    from django.contrib.admin.sites import site
    from django.contrib.auth.models import User
    from django.urls import reverse

    from core import admin_base

    for _ in range(3):
        record(acme, make_run())
    ids = list(ToolCall.objects.order_by("-id").values_list("pk", flat=True))
    monkeypatch.setattr(admin_base, "EXACT_COUNT_UP_TO", 4)
    monkeypatch.setattr(admin_base, "SIDE_TABLE_FROM_OFFSET", 4)
    monkeypatch.setattr(site._registry[ToolCall], "list_per_page", 2)
    client.force_login(User.objects.create_superuser("root", password="pw-for-tests-only"))
    with portal_as(app_role):
        response = client.get(reverse("admin:runs_toolcall_changelist") + "?p=4")
        assert response.status_code == 200, response.content[:300]
        assert [row.pk for row in response.context["cl"].result_list] == ids[6:8]
    # and the role still may not change the keys: only the tables' triggers write them
    assert privileges(ROLE, "runs_toolcall_keys") == {"SELECT"}


def test_every_admin_list_opens_as_the_app_role(app_role, acme, record, make_run, client):
    """What the deployed portal's role was not granted shows only when a page reads it: every
    changelist of the admin, as a superuser (who sees every row, every tenant), as that role."""
    from django.contrib.admin.sites import site
    from django.contrib.auth.models import User
    from django.urls import reverse

    record(acme, make_run())
    client.force_login(User.objects.create_superuser("root", password="pw-for-tests-only"))
    failed = {}
    with portal_as(app_role):
        for model in site._registry:
            meta = model._meta
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
            response = client.get(url)
            if response.status_code != 200:
                failed[url] = response.status_code
    assert not failed
