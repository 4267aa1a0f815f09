"""The tenant scope guard: while a request is handled (the test client, DRF's APIClient, the live
server) or a ``ledger`` command runs, every statement that reads, updates or deletes rows of a
tenant-owned table must say which tenant's rows. A test whose request or command sends one that
does not fails (at teardown) with the statement and the project's frames that sent it.

The tenant-owned tables are those of the models deriving from ``TenantOwned``. An occurrence of
one of them in a query (or in any of its subqueries) is *scoped* when:

1. a predicate ANDed into its WHERE names its tenant: ``"t"."tenant_id" = %s``, ``IN (...)``,
   ``= ANY(...)`` or ``IN (subquery)``. The guard checks that the predicate is there, not that
   its value is one the principal may see: that is what ``for_user``/``for_tenant`` are for
   (and tests/test_tenant_isolation.py);
2. it is joined along keys (a foreign key = the key it points at, in WHERE or an INNER JOIN's
   ON) to a scoped table, or to the tenant table narrowed by ``id`` or ``slug``
   (``filter(tenant__slug=...)``); a LEFT JOIN scopes only the table it brings in;
3. its primary key, or a foreign key to another tenant-owned row, is compared with keys this
   same request (or command) already read from rows it was allowed to read: every row a query
   returns (instances, ``values()``, ``select_related``, ``prefetch_related``) records the
   keys it holds, an ``exists()`` that finds a row records the keys it compared, and a saved
   row records its own. That is what ``select_for_update().get(pk=row.pk)`` re-fetches,
   ``refresh_from_db``, ``run.agent``, related managers, ``instance.save()``/``delete()`` and
   a service handed primary keys by a scoped query send. The same statement with a key taken
   from the URL (``Run.objects.get(pk=pk)``) is the IDOR this guard is for, and fails.
   Rows that hang off a tenant-owned row without a tenant column of their own (an export's
   parts, an approval's votes, many-to-many rows) are known by their keys the same way;
4. its key is ``IN (subquery)`` of a subquery that reads a tenant-owned table and is scoped;
5. it is an export shared with the acting user (``exports_exportshare.user_id`` = the user):
   a share grants one export to one person whatever their roles (exports/access.py).

A disjunction scopes a table when each of its branches does. INSERTs are not checked: a new
row names its tenant.

Not checked, by design (docs/development.md says the same):

- a superuser's statements: an active superuser sees every tenant (``allowed_tenant_ids`` is
  None), so their admin lists and API answers rightly have no tenant predicate; the rule is
  enforced for everyone else, which is what the tests of other principals exercise;
- DRF's authentication of a request (``Request._authenticate``): it finds the credential's
  own row (an API key by its prefix), whose tenant is the one the request then acts for;
- Celery tasks, management commands and test set-up outside a request or command;
- statements sent on raw driver cursors (``runs.integrity_fetch``'s named cursors), which
  Django's execute wrappers never see;
- ``GET /metrics`` (``INSTALLATION_WIDE_PATHS``): the installation's operator scrapes it with
  its own token, and it counts every tenant's rows by design (approval requests by status,
  integrity alarms), never showing one; what it shows is read back for leaks by the
  every-presenter walk.

A test may opt out, for a reason it states: ``@pytest.mark.tenant_scope_exempt(reason=...)``.

How a statement is read (tokens, groups, a query's tables and conditions) is
tests/sql_reader.py; this module holds the rule and its hooks into Django and the CLI.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.sql_reader import (
    SET_OPERATORS,
    AnyOf,
    Item,
    Predicate,
    Tok,
    conjuncts,
    is_query,
    kw,
    parse,
    predicate,
    scope_of,
    split,
)

ROOT = Path(__file__).resolve().parents[1]
_VENV = ROOT / ".venv"
_THIS = Path(__file__).resolve()

# --- the model: which tables are tenant-owned, and where their keys point ------------------


@dataclass(frozen=True)
class Schema:
    tenant_table: str
    tenant_owned: frozenset[str]
    #: table -> column -> the table whose rows the column's values identify, for the columns
    #: that identify a tenant, a tenant-owned row or a row that hangs off one (an export's
    #: parts, an approval's votes, a many-to-many row between two tenant-owned rows): those
    #: tables' primary keys, and every foreign key to them (``tenant_id`` included)
    keys: dict[str, dict[str, str]]
    #: table -> column: rows that grant their user one tenant-owned row whatever the user's
    #: roles (exports/access.py: an export shared with an outside auditor); the acting user's
    #: own grants are in their scope
    grants: dict[str, str]

    def key(self, table: str | None, column: str) -> str | None:
        return self.keys.get(table or "", {}).get(column)


@cache
def schema() -> Schema:
    from django.apps import apps

    from core.models import Tenant, TenantOwned
    from exports.models import ExportShare

    owned = frozenset(m._meta.db_table for m in apps.get_models() if issubclass(m, TenantOwned))
    models = apps.get_models(include_auto_created=True)
    identified = owned | {Tenant._meta.db_table} | {
        m._meta.db_table for m in models for f in m._meta.concrete_fields
        if f.many_to_one and f.related_model._meta.db_table in owned}  # type: ignore[union-attr]
    keys: dict[str, dict[str, str]] = {}
    for model in models:
        table, columns = model._meta.db_table, {}
        if table in identified:
            columns[str(model._meta.pk.column)] = table
        for f in model._meta.concrete_fields:
            target: Any = f.related_model
            if (f.many_to_one or f.one_to_one) and target._meta.db_table in identified:
                columns[str(f.column)] = target._meta.db_table
        if columns:
            keys[table] = columns
    grants = {ExportShare._meta.db_table: str(ExportShare._meta.get_field("user").column)}
    return Schema(Tenant._meta.db_table, owned, keys, grants)


# --- the rule ------------------------------------------------------------------------------

Known = dict[str, set[str]]


def unscoped_tables(sql: str, params: Any = (), known: Known | None = None,
                    user_pk: Any = None) -> list[str]:
    """The tenant-owned tables ``sql`` reads, updates or deletes from without a tenant scope
    (see the module's docstring), for the user whose primary key is ``user_pk``; empty when
    it is scoped or touches none."""
    tree = parse(sql)
    if not tree or not (kw(tree[0], "SELECT", "UPDATE", "DELETE") or is_query(tree[0])):
        return []
    return _Check(list(params or ()), known or {}, user_pk).query(tree, {}, set())


@dataclass
class _Check:
    params: list[Any]
    known: Known
    user_pk: Any

    def query(self, items: list[Item], outer: dict[str, str], outer_scoped: set[str]
              ) -> list[str]:
        parts = split(items, *SET_OPERATORS)
        if len(parts) > 1:
            return [t for part in parts for t in self.query(part, outer, outer_scoped)]
        scope = scope_of(items)
        tables = {**outer, **scope.tables}
        scoped = outer_scoped - scope.tables.keys()
        # a bare column (raw SQL) is the one table's there is
        bare = next(iter(scope.tables)) if len(scope.tables) == 1 else None
        # (a predicate, the one alias it may scope or None for any)
        rules: list[tuple[Predicate | AnyOf, str | None]] = [
            (p, None) for cond in scope.where for part in conjuncts(cond)
            if (p := predicate(part, bare))]
        rules += [(p, alias) for alias, cond in scope.left_joins for part in conjuncts(cond)
                  if (p := predicate(part, bare))]
        grew = True
        while grew:
            grew = False
            for p, only in rules:
                for alias in self.scopes(p, tables, scoped):
                    if alias not in scoped and only in (None, alias):
                        scoped.add(alias)
                        grew = True
        owned = schema().tenant_owned
        missing = [table for alias, table in scope.tables.items()
                   if table in owned and alias not in scoped]
        for sub in scope.subqueries:
            missing += self.query(sub, tables, scoped)
        return missing

    def scopes(self, p: Predicate | AnyOf, tables: dict[str, str], scoped: set[str]
               ) -> list[str]:
        """The aliases predicate ``p`` scopes, given those already scoped."""
        s = schema()
        if isinstance(p, AnyOf):
            each = [{a for q in branch for a in self.scopes(q, tables, scoped)}
                    for branch in p.branches]
            return sorted(set.intersection(*each)) if each else []
        alias = p.column.alias
        key = s.key(tables.get(alias), p.column.name)
        if p.other is not None:
            # A join along a key (a foreign key = the primary key it points at, or two
            # tenant_ids): the rows on either side belong to the same tenant.
            other = p.other.alias
            if key is None or key != s.key(tables.get(other), p.other.name):
                return []
            return ([other] if alias in scoped else []) + ([alias] if other in scoped else [])
        if key == s.tenant_table or (tables.get(alias) == s.tenant_table
                                     and p.column.name == "slug"):
            return [alias]  # tenant_id = ..., or the tenant itself by id or slug
        if (s.grants.get(tables.get(alias, "")) == p.column.name and p.values is not None
                and [self.value(v) for v in p.values] == [self.user_pk]):
            return [alias]  # the acting user's own grants
        if key is None:
            return []
        if p.values is not None and all(self.known_value(v, key) for v in p.values):
            return [alias]
        if p.subquery is not None and self.reads_tenant_rows(p.subquery) and not self.query(
                p.subquery, {}, set()):
            return [alias]
        return []

    def value(self, item: Item) -> Any:
        assert isinstance(item, Tok)
        if item.kind == "ph":
            return self.params[item.param] if item.param < len(self.params) else None
        return item.text

    def known_value(self, item: Item, table: str) -> bool:
        value = self.value(item)
        values = value if isinstance(value, list | tuple) else [value]  # = ANY(%s)
        return bool(values) and all(str(v) in self.known.get(table, ()) for v in values)

    @staticmethod
    def reads_tenant_rows(items: list[Item]) -> bool:
        return any(t in schema().tenant_owned for t in scope_of(items).tables.values())


# --- the guard -----------------------------------------------------------------------------


@dataclass
class Violation:
    entry: str
    sql: str
    params: Any
    tables: list[str]
    frames: list[str]

    def __str__(self) -> str:
        where = "\n".join(f"    {frame}" for frame in self.frames) or "    (no project frame)"
        return (f"{self.entry}: {', '.join(sorted(set(self.tables)))} read without a tenant "
                f"scope\n  SQL: {self.sql}\n  params: {self.params!r}\n  sent from:\n{where}")


@dataclass
class Window:
    """One request or one ``ledger`` command: the keys it read, and who acts."""

    entry: str
    user: Callable[[], Any]
    known: Known = field(default_factory=dict)
    suspended: int = 0

    def remember(self, table: str, value: Any) -> None:
        if value is not None:
            self.known.setdefault(table, set()).add(str(value))


@dataclass
class Guard:
    violations: list[Violation] = field(default_factory=list)

    def take(self) -> list[Violation]:
        """The violations so far, forgotten (for tests of the guard itself)."""
        taken, self.violations[:] = list(self.violations), []
        return taken

    def report(self) -> str:
        seen: dict[tuple[str, str], Violation] = {}
        for v in self.violations:
            seen.setdefault((v.entry, v.sql), v)
        return (f"{len(seen)} statement(s) on tenant-owned tables without a tenant scope "
                "(tests/tenant_scope_guard.py says what counts):\n\n"
                + "\n\n".join(map(str, seen.values())))


#: The guard of the running test (None: no test, or an exempt one). Module-wide, since the
#: live server answers on its own thread.
current: Guard | None = None
_local = threading.local()


#: Routes that count every tenant's rows by design (module docstring): no tenant's person reads
#: them, the installation's operator does.
INSTALLATION_WIDE_PATHS = frozenset({"/metrics"})


def _window() -> Window | None:
    return getattr(_local, "window", None)


def _is_superuser(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False) and getattr(user, "is_active", False))


def _project_frames() -> list[str]:
    frames = []
    for frame in traceback.extract_stack()[:-1]:
        path = Path(frame.filename)
        if path.is_relative_to(ROOT) and not path.is_relative_to(_VENV) and path != _THIS:
            frames.append(f"{path.relative_to(ROOT)}:{frame.lineno} in {frame.name}: "
                          f"{(frame.line or '').strip()}")
    return frames[-12:]


def _check_statement(execute: Callable[..., Any], sql: str, params: Any, many: bool,
                     context: dict[str, Any]) -> Any:
    window, guard = _window(), current
    if (window is not None and guard is not None and not window.suspended
            and any(table in sql for table in schema().tenant_owned)
            and not _is_superuser(user := window.user())):
        from django.contrib.auth import get_user_model

        person = user.pk if isinstance(user, get_user_model()) else None  # not an API key
        for one in (params or [()]) if many else [params]:
            tables = unscoped_tables(sql, one, window.known, person)
            if tables:
                guard.violations.append(
                    Violation(window.entry, sql, one, tables, _project_frames()))
                break
    return execute(sql, params, many, context)


@contextmanager
def guarded(entry: str, user: Callable[[], Any]) -> Iterator[Window]:
    """Check every statement this thread sends until the block ends."""
    from django.db import connections

    previous = _window()
    _local.window = window = Window(entry, user)
    try:
        with ExitStack() as stack:
            for connection in connections.all():
                stack.enter_context(connection.execute_wrapper(_check_statement))
            yield window
    finally:
        _local.window = previous


@contextmanager
def suspended() -> Iterator[None]:
    window = _window()
    if window is not None:
        window.suspended += 1
    try:
        yield
    finally:
        if window is not None:
            window.suspended -= 1


def _request_user(request: Any) -> Any:
    """The request's user if it is known yet (AuthenticationMiddleware's lazy user, or the one
    DRF authenticated), without loading it: loading it from here would send a statement."""
    from django.utils.functional import LazyObject, empty

    user = request.__dict__.get("user")
    if isinstance(user, LazyObject):
        wrapped = user._wrapped
        return None if wrapped is empty else wrapped
    return user


def _remembered(window: Window, rows: Iterator[Any], keys: list[tuple[int, Any]]
                ) -> Iterator[Any]:
    for row in rows:
        for index, table in keys:
            window.remember(table, row[index])
        yield row


# --- the hooks: where a request or a command starts, and where rows are read ---------------


def install(patch: Any) -> None:
    """Hook the guard in with ``patch`` (a ``pytest.MonkeyPatch``)."""
    from django.core.handlers.base import BaseHandler
    from django.db.models.expressions import Col
    from django.db.models.lookups import Exact
    from django.db.models.signals import post_save
    from django.db.models.sql.compiler import SQLCompiler
    from rest_framework.request import Request

    import ledger_portal.cli

    get_response = BaseHandler.get_response

    def guarded_get_response(self: Any, request: Any) -> Any:
        if current is None or request.path in INSTALLATION_WIDE_PATHS:
            return get_response(self, request)
        with guarded(f"{request.method} {request.get_full_path()}",
                     lambda: _request_user(request)):
            return get_response(self, request)

    patch.setattr(BaseHandler, "get_response", guarded_get_response)

    # The tests call ``main`` imported by name, so the guard hooks what main looks up when it
    # runs: the parser, whose parsed command runs inside the window, acting as its user.
    build_parser = ledger_portal.cli.build_parser

    def guarded_build_parser() -> Any:
        parser = build_parser()
        parse_args = parser.parse_args

        def parse(*args: Any, **kwargs: Any) -> Any:
            parsed = parse_args(*args, **kwargs)
            func = parsed.func
            if current is not None and not getattr(parsed, "standalone", False):
                def command(args: Any, user: Any) -> Any:
                    with guarded(f"ledger {args.command}", lambda: user):
                        return func(args, user)
                parsed.func = command
            return parsed

        parser.parse_args = parse  # type: ignore[method-assign]
        return parser

    patch.setattr(ledger_portal.cli, "build_parser", guarded_build_parser)

    authenticate = Request._authenticate  # type: ignore[attr-defined]

    def guarded_authenticate(self: Any) -> None:
        with suspended():
            authenticate(self)

    patch.setattr(Request, "_authenticate", guarded_authenticate)

    # Every row a query returns (instances, select_related, prefetch_related, values(),
    # values_list()) goes through results_iter: the keys it holds were read within the scope.
    results_iter = SQLCompiler.results_iter

    def remembering_results_iter(self: Any, *args: Any, **kwargs: Any) -> Any:
        rows = results_iter(self, *args, **kwargs)
        window = _window()
        if window is None:
            return rows
        keys = [(i, schema().key(col.target.model._meta.db_table, str(col.target.column)))
                for i, (col, _, _) in enumerate(self.select[: self.col_count])
                if isinstance(col, Col)]
        keys = [(i, key) for i, key in keys if key not in (None, schema().tenant_table)]
        return _remembered(window, rows, keys) if keys else rows

    patch.setattr(SQLCompiler, "results_iter", remembering_results_iter)

    # exists() returns no row, but when it finds one, the keys its (ANDed) conditions compare
    # with are keys of rows in the scope: ScopedHistoryAdmin checks an object this way first.
    has_results = SQLCompiler.has_results

    def remembering_has_results(self: Any) -> bool:
        found = bool(has_results(self))
        window, where = _window(), self.query.where
        if found and window is not None and where.connector == "AND" and not where.negated:
            for lookup in where.children:
                if isinstance(lookup, Exact) and isinstance(lookup.lhs, Col):
                    target = lookup.lhs.target
                    key = schema().key(target.model._meta.db_table, str(target.column))
                    if key is not None and key != schema().tenant_table:
                        window.remember(key, getattr(lookup.rhs, "pk", lookup.rhs))
        return found

    patch.setattr(SQLCompiler, "has_results", remembering_has_results)

    def remember_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
        window = _window()
        table = sender._meta.db_table
        if window is not None and schema().key(table, str(sender._meta.pk.column)) == table:
            window.remember(table, instance.pk)

    post_save.connect(remember_saved, weak=False, dispatch_uid="tenant_scope_guard")
