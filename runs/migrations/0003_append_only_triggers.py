"""On PostgreSQL, the database itself refuses to change or remove ledger rows.

UPDATE, DELETE and TRUNCATE raise on every ledger table; on runs, an UPDATE may only move the
tip (last_seq, head_hash, status, ended_at, tip_moved_at) forward. A superuser can still bypass
triggers (``session_replication_role = replica``); the hash chains and signed digests are what
catch that. Other databases rely on the application's refusal alone.
"""

from django.db import migrations

LEDGER_TABLES = ["runs_step", "runs_modelcall", "runs_toolcall", "runs_annotation",
                 "runs_tenantdigest"]
RUN_IDENTITY = ["id", "tenant_id", "seq", "content_hash", "chain_hash", "recorded_at", "run_id",
                "agent_id", "goal", "trigger_ref", "started_at", "replay_of_id", "metadata"]

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger rows are append-only: % on % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation', HINT = 'Correct the ledger with an annotation.';
END $$;

CREATE OR REPLACE FUNCTION ledger_run_tip_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF ({", ".join("NEW." + c for c in RUN_IDENTITY)})
     IS DISTINCT FROM ({", ".join("OLD." + c for c in RUN_IDENTITY)}) THEN
    RAISE EXCEPTION 'ledger rows are append-only: only a run''s tip may move (run %)', OLD.run_id
      USING ERRCODE = 'restrict_violation';
  END IF;
  IF NEW.last_seq < OLD.last_seq THEN
    RAISE EXCEPTION 'a run''s chain only grows (run %)', OLD.run_id
      USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN NEW;
END $$;
"""


def _triggers(table: str, *, tip_only: bool) -> str:
    row_ops = "DELETE" if tip_only else "UPDATE OR DELETE"
    sql = f"""
DROP TRIGGER IF EXISTS ledger_append_only ON {table};
CREATE TRIGGER ledger_append_only BEFORE {row_ops} ON {table}
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS ledger_no_truncate ON {table};
CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
"""
    if tip_only:
        sql += f"""
DROP TRIGGER IF EXISTS ledger_tip_only ON {table};
CREATE TRIGGER ledger_tip_only BEFORE UPDATE ON {table}
  FOR EACH ROW EXECUTE FUNCTION ledger_run_tip_only();
"""
    return sql


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS, params=None)
    for table in LEDGER_TABLES:
        schema_editor.execute(_triggers(table, tip_only=False), params=None)
    schema_editor.execute(_triggers("runs_run", tip_only=True), params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in [*LEDGER_TABLES, "runs_run"]:
        for name in ("ledger_append_only", "ledger_no_truncate", "ledger_tip_only"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
    schema_editor.execute("DROP FUNCTION IF EXISTS ledger_run_tip_only()")


class Migration(migrations.Migration):
    dependencies = [("runs", "0002_integrity")]
    operations = [migrations.RunPython(install, uninstall)]
