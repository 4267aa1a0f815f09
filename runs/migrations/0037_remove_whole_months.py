"""Retention applies signed removal records through ``ledger_apply_removals``: several at once
(every due run of a past month), and a month's partition whose every row belongs to the runs
they list is dropped whole instead of deleted row by row. ``ledger_remove_runs`` (runs 0021,
0027) applies one record through it, as before.

The checks are those of 0021, for each record: its runs closed, ended before its cutoff, under
no active legal hold, at the head it signed, listed in no other record of the call; the rows
removed, dropped partitions included, add up to the records' counts. The drops come last: a
dropped partition locks its table until commit, so nothing else is done under that lock.
"""

import importlib

from django.db import migrations

from runs.models.records import TERMINAL_RUN_STATUSES

_BEFORE = importlib.import_module("runs.migrations.0027_otlp_log_events")

# Children first: a call refers to its step, so the step's keys go after the call.
RECORD_TABLES = ["runs_annotation", "runs_toolcall", "runs_modelcall", "runs_step"]
TERMINAL = ", ".join(f"'{status}'" for status in sorted(TERMINAL_RUN_STATUSES))
REMOVING = "pg_temp.ledger_removing"
OF_REMOVED_RUNS = f"run_id IN (SELECT id FROM {REMOVING})"  # noqa: S608  (constants)

# Built from constants of the code (statuses, table names), never from input.
APPLY_REMOVALS = f"""
CREATE OR REPLACE FUNCTION ledger_apply_removals(p_records bigint[], p_month date)
RETURNS text[] LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp SET lock_timeout = '5s' AS $$
DECLARE
  rec runs_removalrecord%ROWTYPE;
  record_id bigint;
  listed integer;
  matched integer;
  expected bigint := 0;
  rows_removed bigint := 0;
  n bigint;
  tbl text;
  part text;
  low timestamptz;
  high timestamptz;
  strangers boolean;
  whole text[] := '{{}}';
BEGIN
  -- Made afresh: a table of that name the caller made would run its triggers as the owner.
  DROP TABLE IF EXISTS {REMOVING};
  CREATE TEMP TABLE ledger_removing (id bigint PRIMARY KEY) ON COMMIT DROP;
  FOREACH record_id IN ARRAY p_records LOOP
    SELECT * INTO rec FROM runs_removalrecord WHERE id = record_id;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no removal record %', record_id USING ERRCODE = 'restrict_violation';
    END IF;
    SELECT count(*) INTO listed FROM jsonb_each(rec.removed_runs);
    INSERT INTO {REMOVING}
    SELECT r.id FROM jsonb_each(rec.removed_runs) AS e(run_id, head)
      JOIN runs_run r ON r.tenant_id = rec.tenant_id AND r.run_id = e.run_id
     WHERE r.last_seq = (e.head->>0)::integer AND r.head_hash = e.head->>1
       AND r.status IN ({TERMINAL}) AND r.ended_at < rec.cutoff AND r.run_id <> 'governance'
       AND NOT EXISTS (SELECT 1 FROM runs_legalhold h
                        WHERE h.tenant_id = rec.tenant_id AND h.released_at IS NULL
                          AND (h.run_id = '' OR h.run_id = r.run_id))
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS matched = ROW_COUNT;
    IF matched <> listed THEN
      RAISE EXCEPTION 'removal record % lists % runs; only % are closed, ended before %, '
                      'unheld, at the head it signed and in no other record applied with it',
                      rec.number, listed, matched, rec.cutoff
        USING ERRCODE = 'restrict_violation';
    END IF;
    expected := expected + rec.records;
  END LOOP;
  ANALYZE {REMOVING};
  -- The caller's own deferred checks, now: a partition with checks pending cannot be dropped.
  -- Then deferred again (every deferrable constraint here is initially deferred), so the
  -- month's keys, deleted before its rows go, are checked at commit.
  SET CONSTRAINTS ALL IMMEDIATE;
  SET CONSTRAINTS ALL DEFERRED;
  PERFORM set_config('ledger.removal', 'retention', true);
  -- The raw OpenTelemetry spans a run was assembled from carry its content: they go with it,
  -- and so do the GenAI events still waiting for a span of its trace.
  DELETE FROM runs_otlpspan WHERE trace_id IN (
    SELECT t.id FROM runs_otlptrace t JOIN runs_run r
      ON r.tenant_id = t.tenant_id AND r.run_id = t.run_id
     WHERE r.id IN (SELECT id FROM {REMOVING}));
  DELETE FROM runs_otlpevent e USING runs_run r
   WHERE r.tenant_id = e.tenant_id AND 'otel-' || e.trace_id = r.run_id
     AND r.id IN (SELECT id FROM {REMOVING});
  DELETE FROM runs_otlptrace t USING runs_run r
   WHERE r.tenant_id = t.tenant_id AND r.run_id = t.run_id
     AND r.id IN (SELECT id FROM {REMOVING});
  IF p_month IS NOT NULL THEN
    low := p_month::timestamp AT TIME ZONE 'UTC';
    high := (p_month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
  END IF;
  FOREACH tbl IN ARRAY ARRAY{RECORD_TABLES!r} LOOP
    part := tbl || '_p' || to_char(p_month, 'YYYYMM');
    IF p_month IS NOT NULL AND to_regclass(part) IS NOT NULL
       AND to_regclass(tbl || '_keys') IS NOT NULL THEN
      -- SHARE: no row comes into the month while it is weighed (a row stored now goes to
      -- this month's partition, which this lock does not touch)
      EXECUTE format('LOCK TABLE %I IN SHARE MODE', part);
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I p WHERE NOT EXISTS '
                     '(SELECT 1 FROM {REMOVING} r WHERE r.id = p.run_id))', part)
        INTO strangers;
      IF NOT strangers THEN
        EXECUTE format('SELECT count(*) FROM %I', part) INTO n;
        rows_removed := rows_removed + n;
        -- these runs' rows of other months, and their keys through the trigger
        EXECUTE format('DELETE FROM %I WHERE {OF_REMOVED_RUNS} '
                       'AND (recorded_at < $1 OR recorded_at >= $2)', tbl) USING low, high;
        GET DIAGNOSTICS n = ROW_COUNT;
        rows_removed := rows_removed + n;
        -- what is left of their keys is the month's (references to them are checked at
        -- commit, when the partition is gone)
        EXECUTE format('DELETE FROM %I WHERE {OF_REMOVED_RUNS}', tbl || '_keys');
        whole := whole || part;
        CONTINUE;
      END IF;
    END IF;
    EXECUTE format('DELETE FROM %I WHERE {OF_REMOVED_RUNS}', tbl);
    GET DIAGNOSTICS n = ROW_COUNT;
    rows_removed := rows_removed + n;
  END LOOP;
  DELETE FROM runs_run WHERE id IN (SELECT id FROM {REMOVING});
  GET DIAGNOSTICS n = ROW_COUNT;
  rows_removed := rows_removed + n;
  IF rows_removed <> expected THEN
    RAISE EXCEPTION 'removal records % count % records; % would be removed', p_records,
                    expected, rows_removed USING ERRCODE = 'restrict_violation';
  END IF;
  FOREACH part IN ARRAY whole LOOP
    EXECUTE format('DROP TABLE %I', part);
  END LOOP;
  PERFORM set_config('ledger.removal', '', true);
  RETURN whole;
END $$;
REVOKE ALL ON FUNCTION ledger_apply_removals(bigint[], date) FROM PUBLIC;

CREATE OR REPLACE FUNCTION ledger_remove_runs(p_record bigint) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
BEGIN
  PERFORM ledger_apply_removals(ARRAY[p_record], NULL);
  RETURN (SELECT count(*) FROM runs_removalrecord r, jsonb_each(r.removed_runs)
           WHERE r.id = p_record);
END $$;
REVOKE ALL ON FUNCTION ledger_remove_runs(bigint) FROM PUBLIC;
"""  # noqa: S608


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPLY_REMOVALS, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_BEFORE.REMOVE_RUNS, params=None)
        schema_editor.execute("DROP FUNCTION IF EXISTS ledger_apply_removals(bigint[], date)")


class Migration(migrations.Migration):

    dependencies = [("runs", "0036_otlp_spans_partitioned")]

    operations = [migrations.RunPython(install, uninstall, elidable=False)]
