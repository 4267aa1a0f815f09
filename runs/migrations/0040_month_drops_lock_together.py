"""``ledger_apply_removals`` locks the tables whose month partitions it drops all together,
before the first drop, and lets them all go again when one is not had within 200 ms.

A dropped partition takes its table's ACCESS EXCLUSIVE lock until commit. Dropped one after
another, the function held the first table while it waited for the next; an agent's store
that held the next (its rows inserted there) and wanted the first deadlocked with it, and
PostgreSQL aborted one of the two (bench.retention's live writer found it). Now no lock of
the drops is held while another is waited for longer than 200 ms, which is below the
deadlock timeout: a store waits that long at most, then goes on, and the function tries
again, up to 25 times before the month is left for the next pass ("its tables were busy").
"""

import importlib

from django.db import migrations

_BEFORE = importlib.import_module("runs.migrations.0037_remove_whole_months")

DROPS_ONE_BY_ONE = """
  FOREACH part IN ARRAY whole LOOP
    EXECUTE format('DROP TABLE %I', part);
  END LOOP;"""
# Parents in the order ingestion stores into them (steps, model calls, tool calls, notes).
DROPS_TOGETHER = """
  attempts := 0;
  WHILE cardinality(whole) > 0 LOOP
    BEGIN
      PERFORM set_config('lock_timeout', '200ms', true);
      FOR parent IN SELECT t FROM unnest(ARRAY['runs_step', 'runs_modelcall', 'runs_toolcall',
                                               'runs_annotation']) WITH ORDINALITY AS o(t, i)
                     WHERE t || '_p' || to_char(p_month, 'YYYYMM') = ANY (whole) ORDER BY i
      LOOP
        EXECUTE format('LOCK TABLE ONLY %I IN ACCESS EXCLUSIVE MODE', parent);
      END LOOP;
      EXIT;
    EXCEPTION WHEN lock_not_available THEN
      attempts := attempts + 1;
      IF attempts >= 25 THEN
        RAISE;
      END IF;
      PERFORM pg_sleep(0.05 + random() * 0.1);
    END;
  END LOOP;
  PERFORM set_config('lock_timeout', '5s', true);
  FOREACH part IN ARRAY whole LOOP
    EXECUTE format('DROP TABLE %I', part);
  END LOOP;"""

assert DROPS_ONE_BY_ONE in _BEFORE.APPLY_REMOVALS
APPLY_REMOVALS = (_BEFORE.APPLY_REMOVALS
                  .replace(DROPS_ONE_BY_ONE, DROPS_TOGETHER)
                  .replace("  whole text[] := '{}';",
                           "  whole text[] := '{}';\n  attempts integer;\n  parent text;"))


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(APPLY_REMOVALS, params=None)


def reinstall_before(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(_BEFORE.APPLY_REMOVALS, params=None)


class Migration(migrations.Migration):
    dependencies = [("runs", "0039_otlp_event_id_check_probes")]

    operations = [migrations.RunPython(install, reinstall_before, elidable=False)]
