"""Big tables partitioned by month on PostgreSQL (native declarative partitioning).

SQLite keeps plain tables: everything here is a no-op there.

A partitioned table (``partition_by_month``, run by a migration) keeps its name, columns,
indexes, check constraints, outgoing foreign keys and triggers; what changes:

- the primary key is ``(id, <time column>)``: PostgreSQL wants the partition key in every
  unique constraint. ``id`` stays unique all the same: it comes from the table's identity
  sequence, and a trigger (``ledger_partitioned_id_unique``) refuses a row whose ``id`` is
  already stored in any partition (an explicit id, a restored dump). Each table has its own
  trigger function naming the table in plain SQL (``install_id_check``), so PostgreSQL plans
  the check once per session: a generic function's dynamic ``EXECUTE`` was planned on every
  row, a third of a millisecond on each decision stored;
- foreign keys *to* it (which PostgreSQL cannot point at a partitioned table's ``id`` alone)
  become constraint triggers on the referencing tables (``ledger_partitioned_reference``),
  deferred to commit as Django's foreign keys are: a row naming a missing id is refused with
  ``foreign_key_violation``, as before;
- partitions are months, named ``<table>_pYYYYMM``, plus ``<table>_default``, which takes a row
  no month partition covers, so an insert never fails for want of a partition.

``ledger_ensure_partitions(months_ahead)`` creates the coming months' partitions of every
partitioned table (the beat task ``ledger_portal.ensure_partitions`` and ``manage.py
partitions`` call it). It is ``SECURITY DEFINER``, owned by the tables' owner, so the
application's role, which may not create tables, can run it (as ``ledger_remove_runs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.db import connection as default_connection

from core.partition_keys import (
    LOOKUP_SUFFIX,
    drop_keys_table,
    has_keys_table,
    is_keys_trigger,
    keys_table,
    make_keys_table,
    unique_keys,
)

MONTHS_AHEAD = 3

FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION ledger_partitioned_reference() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  target bigint := (to_jsonb(NEW) ->> TG_ARGV[1])::bigint;
  found boolean;
BEGIN
  IF target IS NULL THEN
    RETURN NULL;
  END IF;
  EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE id = $1)', TG_ARGV[0])
    INTO found USING target;
  IF NOT found THEN
    RAISE EXCEPTION 'insert or update on table "%" violates foreign key "%"', TG_TABLE_NAME,
      TG_NAME USING ERRCODE = 'foreign_key_violation',
      DETAIL = format('Key (%s)=(%s) is not present in table "%s".', TG_ARGV[1], target,
                      TG_ARGV[0]);
  END IF;
  RETURN NULL;
END $$;

-- A partition's own statistics plan the scans of it: it gets the columns' declared
-- distinct estimates of its table (a run's records lie together, see runs 0034).
CREATE OR REPLACE FUNCTION ledger_copy_distinct_estimates(parent text, part text)
RETURNS void LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  col record;
BEGIN
  FOR col IN SELECT a.attname, split_part(o, '=', 2)::float8 AS n
             FROM pg_attribute a, unnest(a.attoptions) o
             WHERE a.attrelid = parent::regclass AND o LIKE 'n\_distinct=%' LOOP
    EXECUTE format('ALTER TABLE %I ALTER COLUMN %I SET (n_distinct = %s)', part, col.attname,
                   col.n);
  END LOOP;
END $$;

CREATE OR REPLACE FUNCTION ledger_ensure_partitions(months_ahead integer)
RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  t record;
  month date;
  part text;
  low timestamptz;
  high timestamptz;
  busy boolean;
BEGIN
  FOR t IN SELECT c.relname AS parent, a.attname AS key
           FROM pg_partitioned_table p
           JOIN pg_class c ON c.oid = p.partrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = p.partattrs[0]
           WHERE p.partstrat = 'r' AND p.partnatts = 1
           ORDER BY c.relname
  LOOP
    part := t.parent || '_default';
    IF to_regclass(part) IS NULL THEN
      EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', part, t.parent);
      PERFORM ledger_copy_distinct_estimates(t.parent, part);
      RETURN NEXT part;
    END IF;
    FOR i IN 0..months_ahead LOOP
      month := (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => i))::date;
      part := t.parent || '_p' || to_char(month, 'YYYYMM');
      CONTINUE WHEN to_regclass(part) IS NOT NULL;
      low := month::timestamp AT TIME ZONE 'UTC';
      high := (month + interval '1 month')::timestamp AT TIME ZONE 'UTC';
      EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= $1 AND %I < $2)',
                     t.parent || '_default', t.key, t.key) INTO busy USING low, high;
      IF busy THEN
        -- rows of that month already sit in the default partition (maintenance did not run
        -- in time): they stay there, where every query still finds them
        RAISE WARNING 'partition % not created: % holds rows of that month', part,
          t.parent || '_default';
        CONTINUE;
      END IF;
      EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                     part, t.parent, low, high);
      PERFORM ledger_copy_distinct_estimates(t.parent, part);
      -- known empty, not "never analysed" (which the planner takes for ten pages of rows)
      EXECUTE format('ANALYZE %I', part);
      RETURN NEXT part;
    END LOOP;
  END LOOP;
END $$;

-- A past month's partition that retention has emptied goes whole: its files are freed at once
-- (the rows' deletion left only dead space, reclaimed by VACUUM slowly). Its rows were each
-- removed under a signed removal record; dropping an empty table removes nothing more. A
-- partition whose table is busy (the lock not had within a second) is left for the next run.
CREATE OR REPLACE FUNCTION ledger_drop_empty_partitions()
RETURNS SETOF text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
SET lock_timeout = '1s' AS $$
DECLARE
  p record;
  busy boolean;
BEGIN
  FOR p IN SELECT child.relname AS part, parent.relname AS parent
           FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent
           JOIN pg_class child ON child.oid = i.inhrelid
           JOIN pg_partitioned_table pt ON pt.partrelid = parent.oid
           WHERE child.relname ~ '_p[0-9]{6}$'
             AND to_date(right(child.relname, 6), 'YYYYMM')
                 < date_trunc('month', now() AT TIME ZONE 'UTC')::date
           ORDER BY 1
  LOOP
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', p.part) INTO busy;
    CONTINUE WHEN busy;
    BEGIN
      EXECUTE format('DROP TABLE %I', p.part);
      RETURN NEXT p.part;
    EXCEPTION WHEN lock_not_available THEN
      RAISE WARNING 'partition % not dropped: % busy', p.part, p.parent;
    END;
  END LOOP;
END $$;
"""


def install_functions(schema_editor: Any) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FUNCTIONS, params=None)


ID_CHECK = "ledger_partitioned_id_unique"


def install_id_check(cursor: Any, table: str) -> None:
    """(Re)make ``table``'s id-uniqueness trigger, with a function of its own whose SQL names
    the table, so its plan is cached for the session.

    The cached plan is an index probe of each partition whatever the partitions held when it
    was made (``enable_seqscan`` off inside the function): a session's plan is made once, and
    a month's partition starts out known empty (``ledger_ensure_partitions`` analyses it), so
    a scan of it was the cheapest plan then, and stayed the plan as the month filled (100,000
    decisions stored in one session read 5,000,000,000 rows) until an ANALYZE came."""
    quote = default_connection.ops.quote_name
    function = quote(f"{ID_CHECK}_{table}")
    # ids of one table are serialized by the advisory lock: two sessions inserting one id
    # cannot both pass (the key is the one the generic function took, for a rolling upgrade)
    cursor.execute(f"""
        CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
        SET enable_seqscan = off AS $$
        BEGIN
          PERFORM pg_advisory_xact_lock(hashtext('{table}'), hashtext(NEW.id::text));
          IF EXISTS (SELECT 1 FROM {quote(table)} WHERE id = NEW.id) THEN
            RAISE EXCEPTION 'duplicate key value violates unique constraint "{table}_id_unique"'
              USING ERRCODE = 'unique_violation',
                    DETAIL = format('Key (id)=(%s) already exists.', NEW.id);
          END IF;
          RETURN NEW;
        END $$""")  # noqa: S608  (table names come from migrations, never from input)
    cursor.execute(f"DROP TRIGGER IF EXISTS {ID_CHECK} ON {quote(table)}")
    cursor.execute(f"CREATE TRIGGER {ID_CHECK} BEFORE INSERT OR UPDATE OF id ON {quote(table)} "
                   f"FOR EACH ROW EXECUTE FUNCTION {function}()")
    # the generic function earlier upgrades installed, once no trigger calls it
    cursor.execute(f"""
        DO $$ BEGIN
          IF to_regprocedure('{ID_CHECK}()') IS NOT NULL AND NOT EXISTS (
              SELECT 1 FROM pg_trigger WHERE tgfoid = to_regprocedure('{ID_CHECK}()')) THEN
            DROP FUNCTION {ID_CHECK}();
          END IF;
        END $$""")  # noqa: S608  (a constant name)


def planned_id_check(table: str) -> Any:
    """A migration's forward function for ``RunPython``: give a partitioned ``table`` made
    by an earlier version its own, planned, id-uniqueness trigger function."""

    def forward(apps: Any, schema_editor: Any) -> None:
        if is_partitioned(table, schema_editor.connection):
            with schema_editor.connection.cursor() as cursor:
                install_id_check(cursor, table)

    return forward


@dataclass
class _Table:
    """What a table has beside its columns, as PostgreSQL would recreate it."""

    indexes: list[str]  # CREATE INDEX statements, not the ones backing constraints
    constraints: list[tuple[str, str]]  # (name, definition): foreign keys out, uniques
    triggers: list[str]
    incoming: list[tuple[str, str, str]]  # (referencing table, column, constraint name)
    pkey: str


def _capture(cursor: Any, table: str) -> _Table:
    cursor.execute("""
        SELECT i.indexname, i.indexdef FROM pg_indexes i
        WHERE i.schemaname = 'public' AND i.tablename = %s
          AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname
                          AND c.conrelid = %s::regclass)""", [table, table])
    indexes = [definition for name, definition in cursor.fetchall()
               if not name.endswith(LOOKUP_SUFFIX)]  # a side table's lookups: remade with it
    cursor.execute("""
        SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid = %s::regclass AND contype IN ('p', 'u', 'f', 'x') ORDER BY conname""",
                   [table])
    pkey, constraints = f"{table}_pkey", []
    for name, kind, definition in cursor.fetchall():
        if kind == "p":
            pkey = name
        else:
            constraints.append((name, definition))
    cursor.execute("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass "
                   "AND NOT tgisinternal AND tgparentid = 0 ORDER BY tgname", [table])
    triggers = [d for (d,) in cursor.fetchall()
                if ID_CHECK not in d and not is_keys_trigger(d)]
    return _Table(indexes, constraints, triggers, _foreign_keys_to(cursor, table), pkey)


def _foreign_keys_to(cursor: Any, table: str, but: str = "") -> list[tuple[str, str, str]]:
    """The foreign keys to ``table`` from other tables than itself and ``but``."""
    cursor.execute("""
        SELECT c.conrelid::regclass::text, a.attname, c.conname FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
        WHERE c.confrelid = %s::regclass AND c.contype = 'f' AND c.conrelid <> c.confrelid
          AND c.conparentid = 0 AND c.conrelid::regclass::text <> %s
        ORDER BY 1, 2""", [table, but])
    return list(cursor.fetchall())


def _months(first: date, last: date) -> list[date]:
    months, month = [], first.replace(day=1)
    while month <= last:
        months.append(month)
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return months


def _rebuild(cursor: Any, table: str, key: str, *, partitioned: bool,
             months_ahead: int = MONTHS_AHEAD) -> None:
    """Rewrite ``table`` as a table partitioned by month on ``key``, or back to a plain one.

    Unique keys without ``key`` move to the side table (core/partition_keys.py), and the
    foreign keys to the table then point at it; a table without such keys keeps its id unique
    by a trigger, and the foreign keys to it become constraint triggers."""
    quote = default_connection.ops.quote_name
    cursor.execute(f"LOCK TABLE {quote(table)} IN ACCESS EXCLUSIVE MODE")
    shape = _capture(cursor, table)
    side = keys_table(table)
    if partitioned:
        keys = unique_keys(cursor, table)
        incoming = shape.incoming
        constraints = _retarget([c for c in shape.constraints
                                 if c[0] not in {k.name for k in keys}], table, side)
    else:
        keys = unique_keys(cursor, side) if has_keys_table(cursor, table) else []
        incoming = (_foreign_keys_to(cursor, side, but=table) if keys
                    else _reference_triggers(cursor, table))
        constraints = _retarget(shape.constraints, side, table)
    # by foreign keys to the side table when there is one, else by triggers (decisions)
    keyed = bool(keys)
    estimates = _distinct_estimates(cursor, table)
    old = f"{table}__old"
    cursor.execute(f"ALTER TABLE {quote(table)} RENAME TO {quote(old)}")
    spec = f" PARTITION BY RANGE ({quote(key)})" if partitioned else ""
    cursor.execute(f"CREATE TABLE {quote(table)} (LIKE {quote(old)} INCLUDING DEFAULTS "
                   f"INCLUDING CONSTRAINTS INCLUDING IDENTITY INCLUDING GENERATED "
                   f"INCLUDING STORAGE INCLUDING COMMENTS){spec}")
    if partitioned:
        _make_months(cursor, table, old, key, months_ahead)
    _declare_distinct(cursor, table, estimates)
    cursor.execute(f"INSERT INTO {quote(table)} SELECT * FROM {quote(old)}")  # noqa: S608
    for referencing, _column, name in incoming:
        if keyed or partitioned:
            cursor.execute(f"ALTER TABLE {quote(referencing)} DROP CONSTRAINT {quote(name)}")
        else:
            cursor.execute(f"DROP TRIGGER {quote(name)} ON {quote(referencing)}")
    cursor.execute(f"DROP TABLE {quote(old)}")
    if keyed and not partitioned:
        drop_keys_table(cursor, table)
    cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
    (sequence,) = cursor.fetchone()
    if sequence:
        cursor.execute(f"ALTER SEQUENCE {sequence} RENAME TO {quote(table + '_id_seq')}")
        cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), "  # noqa: S608
                       f"coalesce((SELECT max(id) FROM {quote(table)}), 0) + 1, false)", [table])
    columns = f"id, {quote(key)}" if partitioned else "id"
    cursor.execute(f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(shape.pkey)} "
                   f"PRIMARY KEY ({columns})")
    if keyed and partitioned:
        make_keys_table(cursor, table, keys)
    elif keyed:
        constraints += [(k.name, "UNIQUE (" + ", ".join(quote(c) for c in k.columns) + ")")
                        for k in keys]
    for name, definition in constraints:
        cursor.execute(f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} {definition}")
    for definition in shape.indexes:
        cursor.execute(definition)
    for definition in shape.triggers:
        cursor.execute(definition)
    if partitioned and not keyed:
        install_id_check(cursor, table)
    else:
        cursor.execute(f"DROP FUNCTION IF EXISTS {quote(f'{ID_CHECK}_{table}')}()")
    if partitioned:  # every partition its statistics, the empty ones known empty
        cursor.execute(f"ANALYZE {quote(table)}")
    target = side if keyed and partitioned else table
    for referencing, column, name in incoming:
        if partitioned and not keyed:
            cursor.execute(
                f"CREATE CONSTRAINT TRIGGER {quote(name)} AFTER INSERT OR UPDATE OF "
                f"{quote(column)} ON {quote(referencing)} DEFERRABLE INITIALLY DEFERRED "
                f"FOR EACH ROW EXECUTE FUNCTION ledger_partitioned_reference("
                f"'{table}', '{column}')")
        else:
            cursor.execute(f"ALTER TABLE {quote(referencing)} ADD CONSTRAINT {quote(name)} "
                           f"FOREIGN KEY ({quote(column)}) REFERENCES {quote(target)} (id) "
                           "DEFERRABLE INITIALLY DEFERRED")


def _distinct_estimates(cursor: Any, table: str) -> dict[str, str]:
    """The columns of ``table`` with a declared number of distinct values: column -> value."""
    cursor.execute("""
        SELECT a.attname, split_part(o, '=', 2) FROM pg_attribute a, unnest(a.attoptions) o
        WHERE a.attrelid = %s::regclass AND o LIKE 'n\\_distinct=%%'""", [table])
    return dict(cursor.fetchall())


def _declare_distinct(cursor: Any, table: str, estimates: dict[str, str]) -> None:
    """Declare ``estimates`` on ``table``, and when partitioned on each partition (whose own
    statistics plan a scan of it; ``ledger_ensure_partitions`` copies them to partitions made
    later) and for the whole (``n_distinct_inherited``)."""
    quote = default_connection.ops.quote_name
    cursor.execute("SELECT inhrelid::regclass::text FROM pg_inherits "
                   "WHERE inhparent = %s::regclass", [table])
    partitions = [name for (name,) in cursor.fetchall()]
    for column, value in estimates.items():
        number = float(value)  # from the catalog; a number all the same
        whole = f"n_distinct = {number}" + (f", n_distinct_inherited = {number}"
                                             if partitions else "")
        cursor.execute(f"ALTER TABLE ONLY {quote(table)} ALTER COLUMN {quote(column)} "
                       f"SET ({whole})")
        for partition in partitions:
            cursor.execute(f"ALTER TABLE {quote(partition)} ALTER COLUMN {quote(column)} "
                           f"SET (n_distinct = {number})")


def _retarget(constraints: list[tuple[str, str]], table: str, to: str
              ) -> list[tuple[str, str]]:
    """``constraints`` with a foreign key to ``table`` (its own, as a retry's to the call it
    retries) pointing at ``to`` instead."""
    return [(name, definition.replace(f"REFERENCES {table}(id)", f"REFERENCES {to}(id)"))
            for name, definition in constraints]


def _make_months(cursor: Any, table: str, old: str, key: str, months_ahead: int) -> None:
    """A partition for every month from the oldest row of ``old`` (or this month) to
    ``months_ahead`` months ahead, and the default partition."""
    quote = default_connection.ops.quote_name
    cursor.execute(f"SELECT min({quote(key)}), max({quote(key)}) "  # noqa: S608  (quoted names)
                   f"FROM {quote(old)}")
    low, high = cursor.fetchone()
    today = datetime.now(UTC).date()
    first = min(low.astimezone(UTC).date(), today) if low else today
    last = max(high.astimezone(UTC).date(), today) if high else today
    last = _months(last, last)[0]
    for _ in range(months_ahead):
        last = date(last.year + last.month // 12, last.month % 12 + 1, 1)
    for month in _months(first, last):
        create_month(cursor, table, month)
    cursor.execute(f"CREATE TABLE {quote(table + '_default')} PARTITION OF {quote(table)} "
                   "DEFAULT")


def _reference_triggers(cursor: Any, table: str) -> list[tuple[str, str, str]]:
    """The constraint triggers standing for foreign keys to ``table``: (referencing table,
    column, name)."""
    cursor.execute("""
        SELECT t.tgrelid::regclass::text, t.tgargs, t.tgname FROM pg_trigger t
        WHERE t.tgfoid = 'ledger_partitioned_reference'::regproc ORDER BY 1, 3""")
    found = []
    for referencing, args, name in cursor.fetchall():
        target, column = bytes(args).decode().split("\x00")[:2]
        if target == table:
            found.append((referencing, column, name))
    return found


def create_month(cursor: Any, table: str, month: date) -> str:
    quote = default_connection.ops.quote_name
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    name = f"{table}_p{month:%Y%m}"
    cursor.execute(f"CREATE TABLE {quote(name)} PARTITION OF {quote(table)} FOR VALUES FROM "
                   f"('{month.isoformat()} 00:00+00') TO ('{following.isoformat()} 00:00+00')")
    return name


def make_past_months(first: date, connection: Any = default_connection) -> list[str]:
    """Every partitioned table's partitions from ``first``'s month to this one that are
    missing (a ledger loaded as recorded over past months: the generator's); the names made."""
    if connection.vendor != "postgresql":
        return []
    made = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT partrelid::regclass::text FROM pg_partitioned_table ORDER BY 1")
        tables = [name for (name,) in cursor.fetchall()]
        for table in tables:
            for month in _months(first, datetime.now(UTC).date()):
                cursor.execute("SELECT to_regclass(%s)", [f"{table}_p{month:%Y%m}"])
                if cursor.fetchone()[0] is None:
                    made.append(create_month(cursor, table, month))
                    cursor.execute("SELECT ledger_copy_distinct_estimates(%s, %s)",
                                   [table, made[-1]])
    return made


def is_partitioned(table: str, connection: Any = default_connection) -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_partitioned_table "
                       "WHERE partrelid = to_regclass(%s))", [table])
        return bool(cursor.fetchone()[0])


def partition_by_month(table: str, key: str) -> tuple[Any, Any]:
    """A migration's (forward, backward) functions for ``RunPython``: make ``table`` partitioned
    by month on ``key``, keeping every row; and back to a plain table."""

    def forward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql" or is_partitioned(
                table, schema_editor.connection):
            return
        install_functions(schema_editor)
        with schema_editor.connection.cursor() as cursor:
            _rebuild(cursor, table, key, partitioned=True)

    def backward(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql" or not is_partitioned(
                table, schema_editor.connection):
            return
        with schema_editor.connection.cursor() as cursor:
            _rebuild(cursor, table, key, partitioned=False)

    return forward, backward


def drop_empty_partitions(connection: Any = default_connection) -> list[str]:
    """Drop past months' partitions that hold no row any more (retention emptied them); the
    names dropped."""
    return _names_from("ledger_drop_empty_partitions", (), connection)


def ensure_partitions(months_ahead: int = MONTHS_AHEAD, connection: Any = default_connection
                      ) -> list[str]:
    """Create the coming months' partitions of every partitioned table; the names created."""
    return _names_from("ledger_ensure_partitions", (months_ahead,), connection)


def _names_from(function: str, args: tuple[int, ...], connection: Any) -> list[str]:
    """The partition names the SQL ``function`` returns for ``args`` (integers), or none on
    SQLite or before the migration that installs it."""
    if connection.vendor != "postgresql":
        return []
    signature = f"{function}({', '.join('integer' for _ in args)})"
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regprocedure(%s) IS NOT NULL", [signature])
        if not cursor.fetchone()[0]:
            return []
        marks = ", ".join("%s" for _ in args)
        cursor.execute(f"SELECT * FROM {function}({marks})", list(args))  # noqa: S608
        return [name for (name,) in cursor.fetchall()]


@dataclass
class Partition:
    table: str
    name: str
    bounds: str
    rows: int  # estimated (the planner's count), -1 when never analysed


def partitions(connection: Any = default_connection) -> list[Partition]:
    """Every partition of every partitioned table, with its bounds and estimated rows."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute("""
            SELECT parent.relname, child.relname, pg_get_expr(child.relpartbound, child.oid),
                   child.reltuples::bigint
            FROM pg_inherits i JOIN pg_class parent ON parent.oid = i.inhparent
            JOIN pg_class child ON child.oid = i.inhrelid
            JOIN pg_partitioned_table p ON p.partrelid = parent.oid
            ORDER BY parent.relname, child.relname""")
        return [Partition(*row) for row in cursor.fetchall()]
