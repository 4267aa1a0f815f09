"""Reading SQL the way the tenant scope guard needs it: tokens (sqlparse's lexer), parenthesised
groups, one query's tables and conditions (``Scope``), and the comparisons ANDed into a
condition (``Predicate``, ``AnyOf``). Nothing here knows about tenants; tests/tenant_scope_guard.py
applies the rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

from sqlparse import lexer
from sqlparse import tokens as T

# --- SQL: tokens, parenthesised groups, query scopes ---------------------------------------


@dataclass(frozen=True)
class Tok:
    kind: str  # "kw" (upper-cased), "name" (unquoted), "ph" (a %s), "lit", "op", "punct"
    text: str
    param: int = -1  # a placeholder's position among the statement's parameters


class Group(list["Item"]):
    """The items between a pair of parentheses."""


Item = Tok | Group


def tokens(sql: str) -> Iterator[Tok]:
    params = 0
    for ttype, value in lexer.tokenize(sql):
        if ttype in T.Whitespace or ttype in T.Comment or ttype in T.Newline:
            continue
        if ttype in T.Name.Placeholder:
            yield Tok("ph", value, params)
            params += 1
        elif ttype in T.Literal.String.Symbol:  # "quoted name"
            yield Tok("name", value[1:-1].replace('""', '"'))
        elif ttype in T.Keyword:
            yield Tok("kw", " ".join(value.upper().split()))
        elif ttype in T.Name:
            yield Tok("name", value)
        elif ttype in T.Literal:
            yield Tok("lit", value)
        elif ttype in T.Punctuation:
            yield Tok("punct", value)
        else:
            yield Tok("op", value.upper())


@lru_cache(maxsize=4096)
def parse(sql: str) -> Group:
    stack = [Group()]
    for tok in tokens(sql):
        if tok.text == "(" and tok.kind == "punct":
            group = Group()
            stack[-1].append(group)
            stack.append(group)
        elif tok.text == ")" and tok.kind == "punct" and len(stack) > 1:
            stack.pop()
        else:
            stack[-1].append(tok)
    return stack[0]


def kw(item: Item, *words: str) -> bool:
    return isinstance(item, Tok) and item.kind == "kw" and item.text in words


def is_query(item: Item) -> bool:
    return isinstance(item, Group) and bool(item) and (
        kw(item[0], "SELECT") or (isinstance(item[0], Group) and is_query(item[0])))


def split(items: list[Item], *words: str) -> list[list[Item]]:
    return split_on(items, *(Tok("kw", word) for word in words))


def split_on(items: list[Item], *separators: Tok) -> list[list[Item]]:
    parts: list[list[Item]] = [[]]
    for item in items:
        if isinstance(item, Tok) and item in separators:
            parts.append([])
        else:
            parts[-1].append(item)
    return parts


SET_OPERATORS = ("UNION", "UNION ALL", "INTERSECT", "EXCEPT")
_CLAUSES = ("SELECT", "FROM", "UPDATE", "DELETE", "ON", "WHERE", "GROUP BY", "HAVING",
            "ORDER BY", "LIMIT", "OFFSET", "FOR", "SET", "RETURNING", "WINDOW")


@dataclass
class Scope:
    """One SELECT, UPDATE or DELETE (not its subqueries): its tables by alias, the predicates
    that hold for all of its rows, and the ON of each LEFT JOIN (which hold for the joined
    table's rows only)."""

    tables: dict[str, str] = field(default_factory=dict)
    where: list[list[Item]] = field(default_factory=list)
    left_joins: list[tuple[str, list[Item]]] = field(default_factory=list)
    subqueries: list[Group] = field(default_factory=list)


def clauses(items: list[Item]) -> list[tuple[str, list[Item]]]:
    clauses: list[tuple[str, list[Item]]] = []
    for index, item in enumerate(items):
        if isinstance(item, Tok) and item.kind == "kw" and (
                item.text in _CLAUSES or "JOIN" in item.text) and (
                item.text != "UPDATE" or index == 0):  # not SELECT ... FOR UPDATE
            clauses.append((item.text, []))
        elif clauses:
            clauses[-1][1].append(item)
    return clauses


def scope_of(items: list[Item]) -> Scope:
    scope = Scope()
    joined, left = "", False
    for clause, body in clauses(items):
        if clause in ("FROM", "UPDATE") or "JOIN" in clause:
            for ref in split_on(body, Tok("punct", ",")):
                names = [i.text for i in ref if isinstance(i, Tok) and i.kind == "name"]
                if names and isinstance(ref[0], Tok):  # "table" [AS] [alias]; not (subquery)
                    joined = names[-1]
                    scope.tables[joined] = names[0]
            left = clause.startswith("LEFT")
        elif clause == "ON":
            if left:
                scope.left_joins.append((joined, body))
            else:
                scope.where.append(body)
        elif clause == "WHERE":
            scope.where.append(body)
    collect_queries(items, scope.subqueries)
    return scope


def collect_queries(items: list[Item], found: list[Group]) -> None:
    for item in items:
        if isinstance(item, Group) and is_query(item):
            found.append(item)
        elif isinstance(item, Group):
            collect_queries(item, found)


# --- predicates ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    alias: str
    name: str


@dataclass
class Predicate:
    column: Column
    values: list[Item] | None = None  # placeholders and literals compared with it
    other: Column | None = None  # the column an equality compares it with
    subquery: Group | None = None  # column IN (SELECT ...)


def column_of(items: list[Item], bare: str | None = None) -> Column | None:
    """``"alias"."column"``, or a bare ``column`` of the table aliased ``bare``."""
    if len(items) == 1 and isinstance(items[0], Group):
        return column_of(items[0], bare)
    if len(items) == 1 and isinstance(items[0], Tok) and items[0].kind == "name" and bare:
        return Column(bare, items[0].text)
    if (len(items) == 3 and isinstance(items[0], Tok) and items[0].kind == "name"
            and items[1] == Tok("punct", ".") and isinstance(items[2], Tok)
            and items[2].kind == "name"):
        return Column(items[0].text, items[2].text)
    return None


@dataclass
class AnyOf:
    """A disjunction: it scopes a table when each of its branches does."""

    branches: list[list[Predicate | AnyOf]]


def conjuncts(items: list[Item]) -> list[list[Item]]:
    """The parts ANDed together at the top of a condition (parentheses opened); a disjunction
    is one part."""
    if any(kw(item, "OR") for item in items):
        return [items]
    found = []
    for part in split(items, "AND"):
        if len(part) == 1 and isinstance(part[0], Group) and not is_query(part[0]):
            found += conjuncts(part[0])
        else:
            found.append(part)
    return found


def values_of(items: list[Item]) -> list[Item] | None:
    if all((isinstance(i, Tok) and i.kind in ("ph", "lit")) or i == Tok("punct", ",")
           for i in items):
        return [i for i in items if i != Tok("punct", ",")]
    return None


def predicate(part: list[Item], bare: str | None = None) -> Predicate | AnyOf | None:
    """``column = value``, ``column IN (values)``, ``column = ANY(values)``, ``column IN
    (subquery)``, ``column = column`` or a disjunction of them; None for anything else. A bare
    column is the table aliased ``bare``'s."""
    if any(kw(item, "OR") for item in part):
        return AnyOf([[p for c in conjuncts(branch) if (p := predicate(c, bare))]
                      for branch in split(part, "OR")])
    width = 1 if len(part) > 2 and (kw(part[1], "IN") or part[1] == Tok("op", "=")) else 3
    column = column_of(part[:width], bare)
    if column is None or len(part) < width + 2:
        return None
    op, rhs = part[width], part[width + 1:]
    if kw(op, "IN") or op == Tok("op", "="):
        if len(rhs) == 2 and isinstance(rhs[0], Tok) and rhs[0].text.upper() == "ANY" and \
                isinstance(rhs[1], Group):
            rhs = list(rhs[1])
        elif len(rhs) == 1 and isinstance(rhs[0], Group) and kw(op, "IN"):
            if is_query(rhs[0]):
                return Predicate(column, subquery=rhs[0])
            rhs = list(rhs[0])
        if len(rhs) == 1 and isinstance(rhs[0], Group) and is_query(rhs[0]):
            return Predicate(column, subquery=rhs[0])
        other = column_of(rhs, bare)
        if other is not None:
            return Predicate(column, other=other)
        values = values_of(rhs)
        if values:
            return Predicate(column, values=values)
    return None
