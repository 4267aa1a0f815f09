"""The application's database role, apart from the role that owns the tables.

Migrations run as the owner (``DATABASE_URL`` pointing at it, once per release). The portal's
web processes and workers connect as ``LEDGER_APP_DB_ROLE``, which this module grants exactly
what the application needs: on ledger and governance tables, reading and appending only (on
runs and approval requests, moving their state's columns), and removal only through
``ledger_remove_runs`` (migration runs 0021) and ``ledger_apply_removals`` (runs 0037), which
check holds and apply signed removal records. Not owning the tables, the role cannot
disable their triggers, truncate them or change their definitions; not a superuser, it cannot
switch triggers off for its session. Everything else (settings, jobs, sessions) it may change.
"""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, connection

from core.partition_keys import keys_table

#: Ledger and governance records: appended to, never changed (the triggers refuse it, and the
#: role may not).
APPEND_ONLY_TABLES = ("runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation",
                      "runs_tenantdigest", "runs_removalrecord", "runs_integrityalarm",
                      "policies_decision", "approvals_vote")
#: Rows whose state moves (a run's tip as records are appended, an approval request's
#: decision): those columns only.
STATE_COLUMNS = {
    "runs_run": ("last_seq", "head_hash", "status", "ended_at", "tip_moved_at"),
    "approvals_approvalrequest": ("status", "decided_at", "consumed_at", "consumed_by_id",
                                  "escalated_at", "due_at"),
}
READ_ONLY_TABLES = ("django_migrations",)


def grant_app_role(role: str) -> list[str]:
    """Grant ``role`` what the portal needs on every table of this database (run as the
    tables' owner, after each migration). Returns the statements it ran."""
    quote = connection.ops.quote_name
    who = quote(role)
    with connection.cursor() as cursor:
        cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                       "AND tableowner = current_user ORDER BY tablename")
        tables = [name for (name,) in cursor.fetchall()]
        # A partition (core/partitions.py) is reached through its table, whose grants are
        # the ones checked: on the partition itself the role gets nothing.
        cursor.execute("SELECT relname FROM pg_class WHERE relispartition "
                       "AND relnamespace = 'public'::regnamespace")
        partitions = {name for (name,) in cursor.fetchall()}
        # A partitioned table's unique keys (core/partition_keys.py) are written by its
        # triggers alone, as the tables' owner: the role may read them (the same keys the
        # table shows it), never change them, or removing a key would let a second record in
        # under it.
        side_tables = {keys_table(name) for name in tables} & set(tables)
        cursor.execute("SELECT to_regprocedure('ledger_remove_runs(bigint)') IS NOT NULL")
        removal_function = bool(cursor.fetchone()[0])
        cursor.execute("SELECT to_regprocedure('ledger_apply_removals(bigint[], date)') "
                       "IS NOT NULL")
        removals_function = bool(cursor.fetchone()[0])
        cursor.execute("SELECT to_regprocedure('ledger_ensure_partitions(integer)') IS NOT NULL")
        partition_function = bool(cursor.fetchone()[0])
        cursor.execute("SELECT to_regprocedure('ledger_drop_empty_partitions()') IS NOT NULL")
        drop_function = bool(cursor.fetchone()[0])
    statements = [f"GRANT USAGE ON SCHEMA public TO {who}",
                  f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {who}"]
    if removal_function:  # absent only when migrated back past runs 0021
        statements.append(f"GRANT EXECUTE ON FUNCTION ledger_remove_runs(bigint) TO {who}")
    if removals_function:  # several records at once, a past month whole (runs 0037)
        statements.append(
            f"GRANT EXECUTE ON FUNCTION ledger_apply_removals(bigint[], date) TO {who}")
    if partition_function:  # creates next months' partitions (the beat task)
        statements += ["REVOKE ALL ON FUNCTION ledger_ensure_partitions(integer) FROM PUBLIC",
                       f"GRANT EXECUTE ON FUNCTION ledger_ensure_partitions(integer) TO {who}"]
    if drop_function:  # drops past months' partitions retention emptied (its beat task)
        statements += ["REVOKE ALL ON FUNCTION ledger_drop_empty_partitions() FROM PUBLIC",
                       f"GRANT EXECUTE ON FUNCTION ledger_drop_empty_partitions() TO {who}"]
    for table in tables:
        name = quote(table)
        statements.append(f"REVOKE ALL ON {name} FROM {who}")
        if table in partitions:
            continue
        if table in side_tables:  # read by the admin's deep pages (keys_in_side_table)
            statements.append(f"GRANT SELECT ON {name} TO {who}")
            continue
        if table in STATE_COLUMNS:
            columns = ", ".join(STATE_COLUMNS[table])
            statements += [f"GRANT SELECT, INSERT ON {name} TO {who}",
                           f"GRANT UPDATE ({columns}) ON {name} TO {who}"]
        elif table in APPEND_ONLY_TABLES:
            statements.append(f"GRANT SELECT, INSERT ON {name} TO {who}")
        elif table in READ_ONLY_TABLES:
            statements.append(f"GRANT SELECT ON {name} TO {who}")
        else:
            statements.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO {who}")
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    return statements


def grant_after_migrate(sender: object, using: str = "default", **kwargs: object) -> None:
    """post_migrate (connected for this app alone, so once per migrate, when every table
    exists): keep the application role's grants in step with new tables."""
    from django.conf import settings

    if settings.LEDGER_APP_DB_ROLE and using == DEFAULT_DB_ALIAS \
            and connection.vendor == "postgresql":
        grant_app_role(settings.LEDGER_APP_DB_ROLE)
