"""Replays, their steps and rollbacks moved from ``runs`` to ``operations`` with their tables:
a database that holds them from before the move migrates and keeps every row, every link to
them (incidents, decisions) and the admin history that points at them.

The database is the test's own, on the PostgreSQL server the suite uses; ``manage.py`` runs
in a subprocess, as an operator's upgrade would."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.postgres

# Rows made with the current models (the tables are the same before and after the move).
POPULATE = """
from django.contrib.admin.models import LogEntry, CHANGE
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from incidents.models import Incident
from core.models import Tenant
from operations.models import Replay, ReplayStep, Rollback
from policies.models import Decision
from runs.models import ToolCall

from django.core.management import call_command

# tenants, agents, tools and runs, as the demo has them; not the policies' story, whose newer
# columns a database from before the move does not have yet
call_command("seed_demo", no_jobs=True, no_story=True)
call = ToolCall.objects.filter(status="succeeded").select_related("run", "tool").first()
tenant, run, tool = call.tenant, call.run, call.tool
replay = Replay.objects.create(tenant=tenant, run=run, status="succeeded", steps_total=1,
                               steps_done=1, divergent_steps=1)
ReplayStep.objects.create(tenant=tenant, replay=replay, seq=1, call_id=call.call_id, tool=tool,
                          mode_used="sandbox", status="diverged", divergence={"changed": 1},
                          flagged=True, follow_up="open")
incident = Incident.objects.create(tenant=tenant, title="refunds twice")
incident.replays.add(replay)
Rollback.objects.create(tenant=tenant, tool_call=call, run=run, idempotency_key="rb-1",
                        incident=incident, status="succeeded")
Decision.objects.create(tenant=tenant, call_id="c-replayed", tool=tool.name,
                        action_class=tool.action_class, mode="sandbox", effect="allow",
                        reason="replayed", engine="embedded", input={}, latency_us=1,
                        replay=replay)
admin = User.objects.create_superuser("upgrade-admin")
replay_type = ContentType.objects.get(app_label="runs", model="replay")
LogEntry.objects.create(user=admin, content_type=replay_type, object_id=str(replay.pk),
                        object_repr="replay", action_flag=CHANGE, change_message="checked")
print("populated")
"""

CHECK = """
from django.contrib.admin.models import LogEntry
from incidents.models import Incident
from operations.models import Replay, ReplayStep, Rollback
from policies.models import Decision

replay = Replay.objects.get()
print("steps", ReplayStep.objects.filter(replay=replay, flagged=True).count())
print("rollback", Rollback.objects.get(idempotency_key="rb-1").incident.title)
print("incident replays", list(Incident.objects.get(title="refunds twice").replays
                              .values_list("pk", flat=True))
      == [replay.pk])
print("decision", Decision.objects.get(call_id="c-replayed").replay_id == replay.pk)
entry = LogEntry.objects.get(change_message="checked")
print("history", entry.content_type.app_label, entry.get_edited_object() == replay)
"""


@pytest.fixture
def upgrade_database() -> Iterator[dict[str, str]]:
    server = settings.DATABASES["default"]
    name = f"lp_upgrade_{uuid.uuid4().hex[:8]}"
    admin_url = f"postgres://{server['USER']}@{server['HOST']}:{server['PORT']}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {**os.environ, "DATABASE_URL": admin_url.rsplit("/", 1)[0] + f"/{name}"}
    env.pop("REDIS_URL", None)
    try:
        yield env
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def as_before_the_move(env: dict[str, str]) -> None:
    """The schema, migration records and content types of a database from before the move:
    operations' migrations (and those that depend on them) unapplied, and no content types of
    an app that did not exist yet."""
    manage(env, "migrate", "--no-input", "-v0")
    manage(env, "migrate", "operations", "zero", "--no-input", "-v0")
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        conn.execute("DELETE FROM auth_permission WHERE content_type_id IN (SELECT id FROM "
                     "django_content_type WHERE app_label = 'operations')")
        conn.execute("DELETE FROM django_content_type WHERE app_label = 'operations'")
        applied = {row[0] for row in conn.execute(
            "SELECT app || '.' || name FROM django_migrations")}
    assert "runs.0022_digest_seals_governance" in applied
    assert not {"runs.0023_operations_moved_out", "operations.0001_initial",
                "incidents.0003_replays_in_operations",
                "policies.0010_replays_in_operations"} & applied


#: The last ``runs`` migration of the release that moved replays out; later ones came after.
MOVE_RELEASE_LAST = "0024_search_indexes"


def populate_with_todays_models(env: dict[str, str]) -> str:
    """POPULATE runs today's models against the schema from before the move. The columns and
    tables later ``runs`` migrations added (a tool's stdio server, a model call's request, ...)
    are there while it writes, by those migrations' own SQL, and taken away again after, so
    the upgrade that follows starts from the old schema."""
    plan = manage(env, "showmigrations", "runs", "--plan", "-v0").splitlines()
    later = [line.split(".", 1)[1].strip() for line in plan
             if line.startswith("[ ]  runs.") and line.split(".", 1)[1].strip()
             > MOVE_RELEASE_LAST]
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
        for name in later:
            run_script(conn, manage(env, "sqlmigrate", "runs", name))
    try:
        return manage(env, "shell", "-c", POPULATE)
    finally:
        with psycopg.connect(env["DATABASE_URL"], autocommit=True) as conn:
            for name in reversed(later):
                run_script(conn, manage(env, "sqlmigrate", "--backwards", "runs", name))


def run_script(conn: psycopg.Connection, sql: str) -> None:
    """A migration's SQL: in one go, unless it builds indexes concurrently (a non-atomic
    migration), which PostgreSQL refuses inside the implicit transaction of a multi-statement
    string; those are simple statements, one per line ending in ``;``."""
    if "CONCURRENTLY" not in sql:
        conn.execute(sql.encode())
        return
    for statement in sql.split(";\n"):
        code = "\n".join(line for line in statement.splitlines()
                         if not line.lstrip().startswith("--")).strip()
        if code:
            conn.execute(code.encode())


def test_an_upgrade_keeps_every_replay_rollback_link_and_history_entry(upgrade_database):
    env = upgrade_database
    as_before_the_move(env)
    assert "populated" in populate_with_todays_models(env)

    manage(env, "migrate", "--no-input", "-v0")

    checked = manage(env, "shell", "-v0", "-c", CHECK).splitlines()
    assert checked == ["steps 1", "rollback refunds twice", "incident replays True",
                       "decision True", "history operations True"]
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND (tablename LIKE "
            "'runs_replay%%' OR tablename LIKE 'runs_rollback%%' OR tablename LIKE "
            "'operations_%%')")}
        stale_types = conn.execute("SELECT count(*) FROM django_content_type WHERE "
                                   "app_label = 'runs' AND model IN ('replay', 'replaystep', "
                                   "'rollback')").fetchone()
    assert tables == {"runs_replay", "runs_replaystep", "runs_rollback"}  # no copy, no rename
    assert stale_types == (0,)
    assert "No changes detected" in manage(env, "makemigrations", "--check", "--dry-run")


def test_the_move_can_be_undone(upgrade_database):
    env = upgrade_database
    as_before_the_move(env)
    populate_with_todays_models(env)
    manage(env, "migrate", "--no-input", "-v0")
    manage(env, "migrate", "operations", "zero", "--no-input", "-v0")
    with psycopg.connect(env["DATABASE_URL"]) as conn:
        kept = conn.execute("SELECT (SELECT count(*) FROM runs_replay), (SELECT count(*) FROM "
                            "runs_rollback), (SELECT app_label FROM django_content_type JOIN "
                            "django_admin_log l ON l.content_type_id = django_content_type.id "
                            "WHERE l.change_message = 'checked')").fetchone()
    assert kept == (1, 1, "runs")
