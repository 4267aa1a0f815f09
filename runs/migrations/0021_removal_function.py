"""Retention removes ledger rows only through ``ledger_remove_runs``, a SECURITY DEFINER
function owned by the role that owns the ledger tables.

The application's own role (``LEDGER_APP_DB_ROLE``, see ``core/db_roles.py``) holds no
DELETE on ledger tables and cannot disable their triggers: it writes the signed removal record,
then asks the function to apply it. The function removes exactly the runs the record lists, and
only if each is closed, ended before the record's cutoff, under no active legal hold and still
at the head the record signed; the rows it removes must add up to the record's count.
"""

from django.db import migrations

from runs.models.records import TERMINAL_RUN_STATUSES

RECORD_TABLES = ["runs_annotation", "runs_toolcall", "runs_modelcall", "runs_step"]
TERMINAL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_RUN_STATUSES))

# Built from constants of the code (statuses, table names), never from input.
REMOVE_RUNS = f"""
CREATE OR REPLACE FUNCTION ledger_remove_runs(p_record bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  rec runs_removalrecord%ROWTYPE;
  pks bigint[];
  listed integer;
  rows_removed bigint := 0;
  n bigint;
BEGIN
  SELECT * INTO rec FROM runs_removalrecord WHERE id = p_record;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'no removal record %', p_record USING ERRCODE = 'restrict_violation';
  END IF;
  SELECT count(*) INTO listed FROM jsonb_each(rec.removed_runs);
  SELECT array_agg(r.id) INTO pks
    FROM jsonb_each(rec.removed_runs) AS e(run_id, head)
    JOIN runs_run r ON r.tenant_id = rec.tenant_id AND r.run_id = e.run_id
   WHERE r.last_seq = (e.head->>0)::integer AND r.head_hash = e.head->>1
     AND r.status IN ({TERMINAL}) AND r.ended_at < rec.cutoff AND r.run_id <> 'governance'
     AND NOT EXISTS (SELECT 1 FROM runs_legalhold h
                      WHERE h.tenant_id = rec.tenant_id AND h.released_at IS NULL
                        AND (h.run_id = '' OR h.run_id = r.run_id));
  IF coalesce(array_length(pks, 1), 0) <> listed THEN
    RAISE EXCEPTION 'removal record % lists % runs; only % are closed, ended before %, '
                    'unheld and at the head it signed', rec.number, listed,
                    coalesce(array_length(pks, 1), 0), rec.cutoff
      USING ERRCODE = 'restrict_violation';
  END IF;
  PERFORM set_config('ledger.removal', 'retention', true);
  -- The raw OpenTelemetry spans a run was assembled from carry its content: they go with it.
  DELETE FROM runs_otlpspan WHERE trace_id IN (
    SELECT t.id FROM runs_otlptrace t JOIN runs_run r
      ON r.tenant_id = t.tenant_id AND r.run_id = t.run_id WHERE r.id = ANY(pks));
  DELETE FROM runs_otlptrace t USING runs_run r
   WHERE r.tenant_id = t.tenant_id AND r.run_id = t.run_id AND r.id = ANY(pks);
{"".join(f'''  DELETE FROM {table} WHERE run_id = ANY(pks);
  GET DIAGNOSTICS n = ROW_COUNT;
  rows_removed := rows_removed + n;
''' for table in RECORD_TABLES)}  DELETE FROM runs_run WHERE id = ANY(pks);
  GET DIAGNOSTICS n = ROW_COUNT;
  rows_removed := rows_removed + n;
  PERFORM set_config('ledger.removal', '', true);
  IF rows_removed <> rec.records THEN
    RAISE EXCEPTION 'removal record % counts % records; % would be removed', rec.number,
                    rec.records, rows_removed USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN listed;
END $$;
REVOKE ALL ON FUNCTION ledger_remove_runs(bigint) FROM PUBLIC;
"""  # noqa: S608


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(REMOVE_RUNS, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP FUNCTION IF EXISTS ledger_remove_runs(bigint)")


class Migration(migrations.Migration):

    dependencies = [("runs", "0020_job_heartbeats")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
