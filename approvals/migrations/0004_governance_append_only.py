"""On PostgreSQL, governance records are append-only at the database, like ledger rows.

Policy decisions and votes are never changed or removed. An approval request keeps what was
asked (tenant, call, tool, arguments, their hash, the policy version, who asked) for ever; only
its state moves, once: pending to decided (its status and when), unconsumed to consumed by one
decision, escalated once. Its deadline may move only while it is pending.
"""

from django.db import migrations

STATE = ("status", "decided_at", "consumed_at", "consumed_by_id", "escalated_at", "due_at")
IDENTITY = ("id", "kind", "run_id", "call_id", "agent_id", "tool", "action_class", "arguments",
            "action_hash", "matched_rules", "requested_by", "approvals_needed", "created_at",
            "policy_version_id", "requester_id", "tenant_id", "policy_checksum",
            "requester_key_id")

FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION governance_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'governance records are append-only: % on % refused', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'restrict_violation';
END $$;

CREATE OR REPLACE FUNCTION governance_approval_state_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF ({", ".join("NEW." + c for c in IDENTITY)})
     IS DISTINCT FROM ({", ".join("OLD." + c for c in IDENTITY)}) THEN
    RAISE EXCEPTION 'approval request %: what was asked cannot change', OLD.id
      USING ERRCODE = 'restrict_violation';
  END IF;
  IF OLD.status <> 'pending' AND (NEW.status IS DISTINCT FROM OLD.status
                                 OR NEW.decided_at IS DISTINCT FROM OLD.decided_at
                                 OR NEW.due_at IS DISTINCT FROM OLD.due_at) THEN
    RAISE EXCEPTION 'approval request % was % and stays so', OLD.id, OLD.status
      USING ERRCODE = 'restrict_violation';
  END IF;
  IF (OLD.consumed_by_id IS NOT NULL AND NEW.consumed_by_id IS DISTINCT FROM OLD.consumed_by_id)
     OR (OLD.consumed_at IS NOT NULL AND NEW.consumed_at IS DISTINCT FROM OLD.consumed_at)
     OR (OLD.escalated_at IS NOT NULL AND NEW.escalated_at IS DISTINCT FROM OLD.escalated_at)
  THEN
    RAISE EXCEPTION 'approval request %: a consumption or escalation is not undone', OLD.id
      USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN NEW;
END $$;
"""


def _refusing(table: str, row_ops: str) -> str:
    return f"""
DROP TRIGGER IF EXISTS governance_append_only ON {table};
CREATE TRIGGER governance_append_only BEFORE {row_ops} ON {table}
  FOR EACH ROW EXECUTE FUNCTION governance_refuse_change();
DROP TRIGGER IF EXISTS governance_no_truncate ON {table};
CREATE TRIGGER governance_no_truncate BEFORE TRUNCATE ON {table}
  FOR EACH STATEMENT EXECUTE FUNCTION governance_refuse_change();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTIONS, params=None)
    for table in ("policies_decision", "approvals_vote"):
        schema_editor.execute(_refusing(table, "UPDATE OR DELETE"), params=None)
    schema_editor.execute(_refusing("approvals_approvalrequest", "DELETE"), params=None)
    schema_editor.execute("""
DROP TRIGGER IF EXISTS governance_state_only ON approvals_approvalrequest;
CREATE TRIGGER governance_state_only BEFORE UPDATE ON approvals_approvalrequest
  FOR EACH ROW EXECUTE FUNCTION governance_approval_state_only();
""", params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in ("policies_decision", "approvals_vote", "approvals_approvalrequest"):
        for name in ("governance_append_only", "governance_no_truncate",
                     "governance_state_only"):
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS governance_refuse_change()")
    schema_editor.execute("DROP FUNCTION IF EXISTS governance_approval_state_only()")


class Migration(migrations.Migration):

    dependencies = [("approvals", "0003_approval_binding"),
                    ("policies", "0009_job_heartbeats")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
