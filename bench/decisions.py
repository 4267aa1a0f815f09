"""Policy decisions: the embedded engine in process, the service with its DB write, the HTTP API.

    .venv/bin/python -m bench.decisions                        # 50 rules, 10,000 + 2,000
    .venv/bin/python -m bench.decisions --rules 50 --decisions 10000 --requests 2000

Targets (issue #17): the embedded decision ``CompiledPolicy.decide(doc)`` of a 50-rule policy
in p99 < 100 us in process; ``POST /api/v1/decisions/`` (decision stored) in a median < 5 ms
with 1 client and < 8 ms with 4, beside a plain Django view returning a constant served by the
same gunicorn (``bench/decisions_urls.py``) in the same run. Graded through ``record_figure``.

One throwaway database (``ledger_bench_decisions``). The same ``--rules`` rules (tool globs,
action classes, agents, modes, outage flags, about a third with CEL conditions over the
arguments, two of them unguarded so a missing argument takes the fail-closed path) are
published, as policy ``tools`` (default ``require_approval``; author and publisher differ), in
every tenant of the run: one tenant in outage mode and one not per phase, since the input's
``tenant.outage_mode`` comes from the tenant. A deterministic pool of ``--pool`` proposed calls
(5 known agents and 2 unknown ones, 17 tools, live/sandbox/replay, 10% in outage, varied
arguments) feeds every phase:

1. **embedded**: ``CompiledPolicy.decide(doc)`` of the published version, compiled as the
   service compiles it (``compiled_version``), ``--decisions`` timed calls cycling the pool
   (one untimed pass first). Baselines in the same run, same inputs: a plain-Python reference
   of the same rules (a loop of ``if``s, ``fnmatch`` for globs, a Python lambda for each CEL
   condition, the same fail-closed rule), and a prototype of the engine that converts the
   document into one ``cel.Context`` per decision instead of once per CEL condition evaluated.
   Engine, reference and prototype must give the same effect and the same matched rules on
   every input of the pool: mismatches are listed (a bug in one of them).
2. **decide_tool_call in process**: the service (published versions lookup, decide, approval
   request for require_approval, the ``Decision`` row), ``--decisions`` calls, PostgreSQL.
3. **HTTP**: gunicorn with production's configuration (``deploy/gunicorn.conf.py``, as
   bench.ingest: sync workers, as many as production starts unless ``--workers``) on
   127.0.0.1; 1 client thread, then 4 (``--clients``), each with its own keep-alive
   ``http.client`` connection,
   POST ``--requests`` pre-serialized bodies (the constant view first, then the API) with
   ``Authorization: Bearer <ingest key>`` (the outage tenant's key for the outage calls).
   Every API answer must be 201 with the reference's effect; the Decision and ApprovalRequest
   rows are counted afterwards.

Then a cProfile of one in-process ``decide_tool_call`` loop (``--profile-calls``), and with
``--profile-view`` the DRF view in process (Django test Client).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import fnmatch
import gc
import http.client
import io
import pstats
import queue
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    load_average,
    percentile,
    record_figure,
    table,
    verdict,
)

BENCH = "decisions"
TARGET_EMBEDDED_P99_US = 100.0
# clients -> median target (ms); other client counts are shown, not graded
TARGET_HTTP_MEDIAN_MS = {1: 5.0, 4: 8.0}
EFFECTS = ("allow", "sandbox_only", "require_approval", "deny")
RANK = {e: i for i, e in enumerate(EFFECTS)}
DEFAULT_EFFECT = "require_approval"
URL = "/api/v1/decisions/"


# -- the rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One rule, with its CEL condition and the same condition in Python (the reference)."""

    name: str
    effect: str
    tool: str = "*"
    action_classes: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    modes: tuple[str, ...] = ()
    outage: str = "any"
    cel: str = ""
    py: Callable[[dict[str, Any], dict[str, Any]], Any] | None = None  # (args, doc) -> bool

    def as_rule(self) -> dict[str, Any]:
        return {"name": self.name, "tool": self.tool, "action_classes": list(self.action_classes),
                "agents": list(self.agents), "modes": list(self.modes), "outage": self.outage,
                "condition": self.cel, "effect": self.effect}


_DESTRUCTIVE_SQL = re.compile(r"(?i)(drop|truncate) table")
BILLING = ("support-triage", "billing-reconciler")
UNKNOWN_AGENTS = ("intern-bot", "legacy-crawler")

SPECS: list[Spec] = [
    # -- allow ---------------------------------------------------------------------------------
    Spec("reads are fine", "allow", action_classes=("read",)),
    Spec("support updates tickets", "allow", tool="update_ticket", agents=("support-triage",)),
    Spec("comments by support and review", "allow", tool="post_comment",
         agents=("support-triage", "code-reviewer")),
    Spec("billing refunds", "allow", tool="refund_*", agents=BILLING, modes=("live", "sandbox")),
    Spec("on-call restarts", "allow", tool="restart_*", agents=("infra-oncall",)),
    Spec("on-call scales", "allow", tool="scale_*", agents=("infra-oncall",)),
    Spec("reviewer opens pull requests", "allow", tool="create_pull_request",
         agents=("code-reviewer",)),
    Spec("sandbox writes are free", "allow", action_classes=("write",), modes=("sandbox",)),
    Spec("support and billing e-mail", "allow", tool="send_email", agents=BILLING),
    Spec("exporter uploads reports live", "allow", tool="upload_report",
         agents=("data-exporter",), modes=("live",)),
    Spec("ticket updates name a ticket", "allow", tool="update_ticket",
         cel="args.ticket.startsWith('T-')",  # unguarded: no ticket -> error -> no match
         py=lambda a, d: a["ticket"].startswith("T-")),
    Spec("replayed reads in an outage", "allow", action_classes=("read",), modes=("replay",),
         outage="only"),
    Spec("metrics outside an outage", "allow", tool="get_metrics", outage="never"),
    # -- deny ----------------------------------------------------------------------------------
    Spec("no live deletes", "deny", action_classes=("delete",), modes=("live",)),
    Spec("no hard deletes", "deny", action_classes=("delete",),
         cel="has(args.hard) && args.hard == true",
         py=lambda a, d: "hard" in a and a["hard"] is True),
    Spec("huge refunds", "deny", tool="refund_*",
         cel="has(args.amount_cents) && args.amount_cents > 100000",
         py=lambda a, d: "amount_cents" in a and a["amount_cents"] > 100000),
    Spec("unknown currency", "deny", tool="*_payment",
         cel="has(args.currency) && !(args.currency in ['EUR', 'USD', 'GBP'])",
         py=lambda a, d: "currency" in a and a["currency"] not in ("EUR", "USD", "GBP")),
    Spec("uploads outside the EU bucket", "deny", tool="upload_*",
         cel="has(args.bucket) && !args.bucket.startsWith('s3://reports-eu/')",
         py=lambda a, d: "bucket" in a and not a["bucket"].startswith("s3://reports-eu/")),
    Spec("mass mailing", "deny", tool="send_*",
         cel="has(args.recipients) && size(args.recipients) > 20",
         py=lambda a, d: "recipients" in a and len(a["recipients"]) > 20),
    Spec("sensitive paths", "deny", tool="read_file",
         cel="has(args.paths) && args.paths.exists(p, p.startsWith('/etc/') || "
             "p.startsWith('secrets/'))",
         py=lambda a, d: "paths" in a and any(p.startswith(("/etc/", "secrets/"))
                                              for p in a["paths"])),
    Spec("destructive SQL", "deny", tool="query_*",
         cel="has(args.query) && args.query.matches('(?i)(drop|truncate) table')",
         py=lambda a, d: "query" in a and _DESTRUCTIVE_SQL.search(a["query"]) is not None),
    Spec("big transfers", "deny", tool="transfer_*",
         cel="args.amount_cents > 5000000",  # unguarded: no amount -> error -> fail closed
         py=lambda a, d: a["amount_cents"] > 5000000),
    Spec("no exfil during an outage", "deny", action_classes=("exfil",), outage="only"),
    Spec("unknown agents do not write", "deny", action_classes=("write", "delete", "exfil"),
         agents=UNKNOWN_AGENTS),
    Spec("no scaling in replays", "deny", tool="scale_*", modes=("replay",)),
    Spec("no kubectl", "deny", tool="kubectl_*"),
    Spec("no replayed payments", "deny", tool="*payment*", modes=("replay",)),
    Spec("no dropping tables", "deny", tool="drop_*"),
    Spec("exporter never deletes outside an outage", "deny", tool="delete_record",
         agents=("data-exporter",), outage="never"),
    # -- require_approval ----------------------------------------------------------------------
    Spec("big refunds need a person", "require_approval", tool="refund_*",
         cel="has(args.amount_cents) && args.amount_cents > 10000",
         py=lambda a, d: "amount_cents" in a and a["amount_cents"] > 10000),
    Spec("exporter exfil needs a person", "require_approval", action_classes=("exfil",),
         agents=("data-exporter",)),
    Spec("external recipients", "require_approval", tool="send_*",
         cel="has(args.recipients) && args.recipients.exists(r, !r.endsWith('@example.com'))",
         py=lambda a, d: "recipients" in a and any(not r.endswith("@example.com")
                                                   for r in a["recipients"])),
    Spec("external address", "require_approval", tool="send_email",
         cel="has(args.to) && !args.to.endsWith('@example.com')",
         py=lambda a, d: "to" in a and not a["to"].endswith("@example.com")),
    Spec("large exports", "require_approval", action_classes=("exfil",),
         cel="has(args.rows) && args.rows > 10000",
         py=lambda a, d: "rows" in a and a["rows"] > 10000),
    Spec("big scale-ups", "require_approval", tool="scale_*",
         cel="has(args.replicas) && args.replicas > 20",
         py=lambda a, d: "replicas" in a and a["replicas"] > 20),
    Spec("restarts by other agents", "require_approval", tool="restart_*",
         agents=("support-triage", "code-reviewer", "data-exporter")),
    Spec("enterprise tickets", "require_approval", tool="update_ticket", modes=("live",),
         cel="has(args.customer) && has(args.customer.tier) && "
             "args.customer.tier == 'enterprise'",
         py=lambda a, d: "customer" in a and "tier" in a["customer"]
         and a["customer"]["tier"] == "enterprise"),
    Spec("deletes outside live", "require_approval", action_classes=("delete",),
         modes=("sandbox", "replay")),
    Spec("live writes during an outage", "require_approval", action_classes=("write",),
         modes=("live",), outage="only"),
    Spec("replayed writes during an outage", "require_approval", action_classes=("write",),
         modes=("replay",), outage="only"),
    Spec("pull requests to main", "require_approval", tool="create_pull_request",
         cel="has(args.base) && args.base == 'main' && "
             "!(has(args.labels) && 'hotfix' in args.labels)",
         py=lambda a, d: "base" in a and a["base"] == "main"
         and not ("labels" in a and "hotfix" in a["labels"])),
    Spec("support payments during an outage", "require_approval", tool="*_payment",
         agents=("support-triage",), outage="only"),
    Spec("transfers", "require_approval", tool="transfer_*"),
    # -- sandbox_only --------------------------------------------------------------------------
    Spec("replayed writes to the sandbox", "sandbox_only", action_classes=("write",),
         modes=("replay",)),
    Spec("exporter writes in the sandbox", "sandbox_only", action_classes=("write",),
         agents=("data-exporter",)),
    Spec("large searches", "sandbox_only", tool="search_*",
         cel="has(args.limit) && args.limit > 500",
         py=lambda a, d: "limit" in a and a["limit"] > 500),
    Spec("exporter queries during an outage", "sandbox_only", tool="query_*",
         agents=("data-exporter",), outage="only"),
    Spec("on-call writes during an outage", "sandbox_only", action_classes=("write",),
         agents=("infra-oncall",), outage="only"),
    Spec("new things in non-live modes", "sandbox_only", tool="create_*",
         modes=("replay", "sandbox")),
    Spec("comments with plain http links", "sandbox_only", tool="post_comment",
         cel="has(args.body) && args.body.contains('http://')",
         py=lambda a, d: "body" in a and "http://" in a["body"]),
]


def rule_specs(count: int) -> list[Spec]:
    """The first ``count`` rules; above the 50 written ones, copies with renamed tool globs
    (so they match nothing new and only add evaluation work)."""
    if count <= len(SPECS):
        return SPECS[:count]
    extra = []
    for i in range(count - len(SPECS)):
        base = SPECS[i % len(SPECS)]
        extra.append(Spec(**{**base.__dict__, "name": f"{base.name} (copy {i + 1})",
                             "tool": f"legacy_{i}_{base.tool.strip('*') or 'x'}*"}))
    return SPECS + extra


# -- the reference: the same rules in plain Python -------------------------------------------


class Reference:
    """A loop of ``if``s over the rules; globs by ``fnmatch``, conditions as Python lambdas;
    an error in a condition counts as a match except for allow rules (the engine's rule)."""

    def __init__(self, default: str, specs: list[Spec]):
        self.default = default
        self.rules = [(s.name, s.effect, RANK[s.effect], s.tool, frozenset(s.action_classes),
                       frozenset(s.agents), frozenset(s.modes), s.outage, s.py) for s in specs]
        self.conditions_run = 0
        self.condition_errors = 0
        self.count = False

    def decide(self, doc: dict[str, Any]) -> tuple[str, list[str]]:
        action_class, agent, mode = doc["action_class"], doc["agent"]["id"], doc["mode"]
        outage, tool, args = doc["tenant"]["outage_mode"], doc["tool"]["name"], doc["args"]
        matched: list[str] = []
        best, best_effect = -1, self.default
        for name, effect, rank, glob, classes, agents, modes, out, cond in self.rules:
            if classes and action_class not in classes:
                continue
            if agents and agent not in agents:
                continue
            if modes and mode not in modes:
                continue
            if out == "only" and not outage:
                continue
            if out == "never" and outage:
                continue
            if glob != "*" and not fnmatch.fnmatchcase(tool, glob):
                continue
            if cond is not None:
                if self.count:
                    self.conditions_run += 1
                try:
                    ok = cond(args, doc) is True
                except Exception:
                    if self.count:
                        self.condition_errors += 1
                    ok = rank != 0
                if not ok:
                    continue
            matched.append(name)
            if rank > best:
                best, best_effect = rank, effect
        return best_effect, matched


def referenced_roots(policy: Any) -> tuple[str, ...]:
    """The input document's roots that some condition of ``policy`` names."""
    from policies.engine import ROOTS

    used: set[str] = set()
    for rule in policy.rules:
        if rule.program is not None:
            used |= set(rule.program.variables()) & ROOTS
    return tuple(sorted(used))


def passes_filters(rule: Any, doc: dict[str, Any]) -> bool:
    """The engine's structural checks of a rule (everything but its CEL condition)."""
    if rule.action_classes and doc["action_class"] not in rule.action_classes:
        return False
    if rule.agents and doc["agent"]["id"] not in rule.agents:
        return False
    if rule.modes and doc["mode"] not in rule.modes:
        return False
    if rule.outage != "any" and doc["tenant"]["outage_mode"] != (rule.outage == "only"):
        return False
    return rule.tool == "*" or fnmatch.fnmatchcase(doc["tool"]["name"], rule.tool)


def condition_costs(policy: Any, docs: list[dict[str, Any]], roots: tuple[str, ...]
                    ) -> tuple[list[list[Any]], float, float]:
    """Where a CEL condition's time goes. Per conditional rule, over the inputs that reach it:
    the median of ``program.execute(ctx)`` on a ``cel.Context`` already converted (the
    evaluation alone). And the median conversion of a whole input document, and of only
    ``roots`` of it (a trivial program executed on the dict)."""
    import cel

    clock = time.perf_counter_ns
    rows = []
    for rule in policy.rules:
        if rule.program is None:
            continue
        samples = []
        for doc in docs:
            if not passes_filters(rule, doc):
                continue
            ctx = cel.Context(doc, functions_of(policy) or None)
            with contextlib.suppress(Exception):
                rule.program.execute(ctx)  # converts the document; not timed
            for _ in range(3):
                t0 = clock()
                with contextlib.suppress(Exception):
                    rule.program.execute(ctx)
                samples.append((clock() - t0) / 1000)
        rows.append([rule.name, rule.effect, len(samples) // 3,
                     percentile(samples, 50) if samples else "", rule.program.source[:70]])
    trivial = cel.compile("true")
    full, part = [], []
    for doc in docs:
        t0 = clock()
        trivial.execute(doc)
        t1 = clock()
        trivial.execute({r: doc[r] for r in roots})
        t2 = clock()
        full.append((t1 - t0) / 1000)
        part.append((t2 - t1) / 1000)
    return rows, percentile(full, 50), percentile(part, 50)


def functions_of(policy: Any) -> dict[str, Any]:
    """The functions the compiled conditions call in place of ``matches()``."""
    found: dict[str, Any] = {}
    for rule in policy.rules:
        found.update(getattr(rule, "functions", {}) or {})
    return found


def decide_one_context(policy: Any, doc: dict[str, Any], roots: tuple[str, ...] | None = None
                       ) -> tuple[str, list[str]]:
    """Prototype (bench only, not app code): the engine's rules and order, but the document is
    converted once per decision into a ``cel.Context`` shared by every condition evaluated,
    instead of once per ``program.execute(doc)``; with ``roots``, only those roots of the
    document go into it (the ones the policy's conditions name)."""
    import cel

    ctx = None
    matched = []
    action_class, agent, mode = doc["action_class"], doc["agent"]["id"], doc["mode"]
    outage, tool = doc["tenant"]["outage_mode"], doc["tool"]["name"]
    for rule in policy.rules:
        if rule.action_classes and action_class not in rule.action_classes:
            continue
        if rule.agents and agent not in rule.agents:
            continue
        if rule.modes and mode not in rule.modes:
            continue
        if rule.outage != "any" and outage != (rule.outage == "only"):
            continue
        if rule.tool != "*" and not fnmatch.fnmatchcase(tool, rule.tool):
            continue
        if rule.program is not None:
            if ctx is None:
                ctx = cel.Context(doc if roots is None else {r: doc[r] for r in roots},
                                  functions_of(policy) or None)
            try:
                ok = rule.program.execute(ctx) is True
            except Exception:
                ok = rule.effect != "allow"
            if not ok:
                continue
        matched.append(rule)
    if not matched:
        return policy.default_effect, []
    strictest = max(matched, key=lambda r: RANK[r.effect])
    return strictest.effect, [r.name for r in matched]


# -- the inputs ------------------------------------------------------------------------------

# tool -> (action class, agents that use it)
TOOLS: dict[str, tuple[str, tuple[str, ...]]] = {
    "search_tickets": ("read", ("support-triage",)),
    "get_customer": ("read", ("support-triage", "billing-reconciler", "data-exporter")),
    "update_ticket": ("write", ("support-triage",)),
    "send_email": ("exfil", ("support-triage", "billing-reconciler")),
    "refund_payment": ("write", ("support-triage", "billing-reconciler")),
    "query_ledger_db": ("read", ("billing-reconciler", "data-exporter")),
    "delete_record": ("delete", ("data-exporter", "billing-reconciler")),
    "upload_report": ("exfil", ("data-exporter",)),
    "get_metrics": ("read", ("infra-oncall",)),
    "restart_service": ("write", ("infra-oncall", "support-triage")),
    "scale_deployment": ("write", ("infra-oncall",)),
    "read_file": ("read", ("code-reviewer",)),
    "create_pull_request": ("write", ("code-reviewer",)),
    "post_comment": ("write", ("code-reviewer", "support-triage")),
    "transfer_funds": ("write", ("billing-reconciler",)),
    "kubectl_exec": ("write", ("infra-oncall",)),
    "drop_table": ("delete", ("data-exporter",)),
}
KNOWN_AGENTS = ("support-triage", "billing-reconciler", "infra-oncall", "data-exporter",
                "code-reviewer")


def _email(rng: random.Random, internal: float) -> str:
    user = rng.choice(["ada", "grace", "alan", "edsger", "barbara", "linus", "radia"])
    domain = "example.com" if rng.random() < internal else rng.choice(
        ["gmail.com", "partner.io", "customer.org"])
    return f"{user}.{rng.randint(1, 999)}@{domain}"


def _arguments(rng: random.Random, tool: str, n: int) -> dict[str, Any]:
    if tool == "search_tickets":
        return {"query": f"status:open assignee:none page:{rng.randint(1, 9)}",
                "limit": 1000 if rng.random() < 0.1 else rng.choice([10, 25, 50])}
    if tool == "get_customer":
        return {"customer_id": f"cus_{rng.randrange(10**8)}"}
    if tool == "update_ticket":
        args: dict[str, Any] = {"status": rng.choice(["open", "pending", "solved"]),
                                "customer": {"email": _email(rng, 0.0),
                                             "tier": rng.choice(["free", "pro", "enterprise"])}}
        if rng.random() < 0.9:
            args["ticket"] = f"T-{n}"
        return args
    if tool == "send_email":
        args = {"to": _email(rng, 0.8), "subject": f"About your ticket T-{n}",
                "body": "Hello, " * rng.randint(1, 20)}
        if rng.random() < 0.2:
            args["recipients"] = [_email(rng, 0.9) for _ in range(rng.choice([1, 3, 8, 30]))]
        return args
    if tool == "refund_payment":
        amount = rng.choice([rng.randint(500, 9_999), rng.randint(500, 9_999),
                             rng.randint(10_001, 100_000), rng.randint(100_001, 400_000)])
        return {"payment_id": f"pay_{rng.randrange(10**8)}", "amount_cents": amount,
                "currency": "JPY" if rng.random() < 0.05 else rng.choice(["EUR", "EUR", "USD",
                                                                          "GBP"])}
    if tool == "query_ledger_db":
        sql = ("DROP TABLE ledger_entries" if rng.random() < 0.05 else
               f"SELECT * FROM invoices WHERE account = {rng.randint(1, 5000)}")
        return {"query": sql, "limit": rng.choice([100, 1000])}
    if tool in ("delete_record", "drop_table"):
        args = {"table": rng.choice(["customers", "tickets", "exports"]),
                "id": rng.randrange(10**6)}
        if rng.random() < 0.2:
            args["hard"] = True
        return args
    if tool == "upload_report":
        bucket = ("s3://reports-eu/quarterly" if rng.random() < 0.9 else "s3://public-dump/x")
        return {"bucket": bucket, "key": f"usage-{n}.csv", "rows": rng.randint(10, 50_000)}
    if tool == "get_metrics":
        return {"service": rng.choice(["checkout", "search", "auth"]), "window": "15m"}
    if tool == "restart_service":
        return {"service": rng.choice(["checkout", "search", "auth"]),
                "namespace": rng.choice(["prod", "staging"])}
    if tool == "scale_deployment":
        return {"deployment": "workers", "replicas": rng.choice([0, 2, 4, 8, 30])}
    if tool == "read_file":
        paths = [f"src/module_{rng.randint(1, 40)}.py" for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.05:
            paths.append(rng.choice(["/etc/passwd", "secrets/prod.env"]))
        return {"repo": "ledger-portal", "paths": paths}
    if tool == "create_pull_request":
        args = {"base": rng.choice(["main", "develop"]), "title": f"Fix #{n}"}
        if rng.random() < 0.5:
            args["labels"] = rng.choice([["hotfix"], ["chore", "deps"], ["bug", "hotfix"]])
        return args
    if tool == "post_comment":
        link = "http://docs.example.com/x" if rng.random() < 0.1 else "https://docs.example.com"
        return {"target": f"PR-{n}", "body": f"See {link} for details."}
    if tool == "transfer_funds":
        r = rng.random()
        if r < 0.15:
            return {"to_account": "DE00 1234"}  # no amount: the unguarded rule errors
        if r < 0.2:
            return {"to_account": "DE00 1234", "amount_cents": "12000"}  # a string: errors
        return {"to_account": "DE00 1234",
                "amount_cents": rng.choice([50_000, 2_000_000, 9_000_000])}
    if tool == "kubectl_exec":
        return {"pod": "workers-0", "command": ["sh", "-c", "ls"]}
    raise KeyError(tool)


@dataclass
class Call:
    outage: bool
    agent_id: str
    run_id: str
    call_id: str
    tool: str
    action_class: str
    mode: str
    arguments: dict[str, Any]
    expected: str = ""  # the reference's effect
    expected_rules: list[str] = field(default_factory=list)

    def doc(self, tenant_slug: str) -> dict[str, Any]:
        from policies.engine import input_document

        return input_document(tenant_slug=tenant_slug, outage_mode=self.outage,
                              agent_id=self.agent_id, run_id=self.run_id, call_id=self.call_id,
                              tool=self.tool, action_class=self.action_class, mode=self.mode,
                              args=self.arguments)

    def body(self) -> bytes:
        return orjson.dumps({"run_id": self.run_id, "call_id": self.call_id,
                             "agent_id": self.agent_id, "tool": self.tool,
                             "action_class": self.action_class, "mode": self.mode,
                             "arguments": self.arguments})


def make_pool(size: int, seed: int) -> list[Call]:
    rng = random.Random(f"decisions:{seed}")
    tools = list(TOOLS)
    pool = []
    for n in range(1, size + 1):
        r = rng.random()
        if r < 0.05:
            agent = rng.choice(UNKNOWN_AGENTS)
            tool = rng.choice(tools)
        else:
            agent = rng.choice(KNOWN_AGENTS)
            mine = [t for t, (_, users) in TOOLS.items() if agent in users]
            tool = rng.choice(mine)
        mode = rng.choices(["live", "sandbox", "replay"], [70, 15, 15])[0]
        pool.append(Call(outage=rng.random() < 0.10, agent_id=agent,
                         run_id=f"run-{rng.randint(1, size // 5 + 1):06d}",
                         call_id=f"c-{n:06d}", tool=tool, action_class=TOOLS[tool][0],
                         mode=mode, arguments=_arguments(rng, tool, n)))
    return pool


# -- database setup --------------------------------------------------------------------------


def publish_everywhere(slugs: list[tuple[str, bool]], specs: list[Spec]
                       ) -> dict[str, tuple[Any, str, Any]]:
    """Per slug: a tenant (outage flag), the rules published as policy ``tools``, an ingest
    key. {slug: (tenant, raw key, published version)}."""
    from django.contrib.auth.models import User

    from core.models import Tenant
    from core.services import issue_api_key
    from policies.models import Policy, Rule
    from policies.services import create_draft, publish_policy_version

    author = User.objects.create_user("bench-author", is_staff=True)
    publisher = User.objects.create_user("bench-publisher", is_staff=True)
    out = {}
    for slug, outage in slugs:
        # The reference decides by the class each call declares; the portal does the same
        # for tools missing from the registry only when the tenant trusts declared classes
        # (otherwise an unregistered tool not declared read waits for a person).
        tenant = Tenant.objects.create(slug=slug, name=slug, outage_mode=outage,
                                       unregistered_tools="trust_declared")
        policy = Policy.objects.create(tenant=tenant, name="tools")
        draft = create_draft(policy, by=author, change_note=f"bench: {len(specs)} rules")
        draft.default_effect = DEFAULT_EFFECT
        draft.save()
        Rule.objects.bulk_create([Rule(tenant=tenant, version=draft, position=i, **s.as_rule())
                                  for i, s in enumerate(specs)])
        version = publish_policy_version(draft, by=publisher)
        _, raw = issue_api_key(tenant, "bench-agent", ["ingest"])
        out[slug] = (tenant, raw, version)
    return out


# -- measurement helpers ---------------------------------------------------------------------


def stats_row(name: str, samples: list[float], unit_scale: float = 1.0, note: str = ""
              ) -> list[Any]:
    """name, n, median, p95, p99, p99.9, max (samples scaled by ``unit_scale``)."""
    s = [x * unit_scale for x in samples]
    return [name, len(s), percentile(s, 50), percentile(s, 95), percentile(s, 99),
            percentile(s, 99.9), max(s), note]


def timed_loop(fn: Callable[[Any], Any], inputs: list[Any], count: int) -> tuple[list[float],
                                                                                  float, tuple]:
    """``fn(input)`` over ``inputs`` cyclically, ``count`` times, one untimed pass first;
    (per-call microseconds, wall seconds, gc collections per generation during the loop)."""
    for item in inputs:
        fn(item)
    n = len(inputs)
    samples = [0.0] * count
    clock = time.perf_counter_ns
    gc_before = [s["collections"] for s in gc.get_stats()]
    started = time.perf_counter()
    for i in range(count):
        item = inputs[i % n]
        t0 = clock()
        fn(item)
        samples[i] = (clock() - t0) / 1000
    wall = time.perf_counter() - started
    gc_after = [s["collections"] for s in gc.get_stats()]
    return samples, wall, tuple(a - b for a, b in zip(gc_after, gc_before, strict=True))


def timer_overhead_us() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(10_000):
        t0 = clock()
        samples.append(clock() - t0)
    return percentile(samples, 50) / 1000


def profile_text(fn: Callable[[], Any], sorts: list[tuple[str, int]],
                 restrict: str | None = None) -> str:
    """One cProfile of ``fn``, printed under each (sort, top) given."""
    profiler = cProfile.Profile()
    profiler.enable()
    fn()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    for sort, top in sorts:
        out.write(f"-- sorted by {sort}, top {top}\n")
        if restrict:
            stats.sort_stats(sort).print_stats(restrict, top)
        else:
            stats.sort_stats(sort).print_stats(top)
    return out.getvalue()


# -- HTTP ------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    seconds: float
    latencies_ms: list[float]
    effects: list[str]
    reconnects: int
    approvals_returned: int
    wrong: list[str]


def post_decisions(port: int, requests: list[tuple[str, bytes, str]], clients: int,
                   url: str = URL) -> HttpResult:
    """POST every (key, body, expected effect) once over ``clients`` keep-alive connections
    to ``url``. Stops at the first non-201 answer."""
    work: queue.Queue[int] = queue.Queue()
    for i in range(len(requests)):
        work.put(i)
    latencies: list[float] = []
    effects: list[str] = []
    wrong: list[str] = []
    errors: list[str] = []
    reconnects = [0]
    approvals = [0]
    lock = threading.Lock()

    def client(conn: http.client.HTTPConnection) -> None:
        mine: list[tuple[float, bytes, int]] = []
        while not errors:
            try:
                i = work.get_nowait()
            except queue.Empty:
                break
            key, body, _ = requests[i]
            if conn.sock is None:
                with lock:
                    reconnects[0] += 1
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json",
                       "Connection": "keep-alive"}
            started = time.perf_counter()
            conn.request("POST", url, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
            elapsed = (time.perf_counter() - started) * 1000
            if resp.status != 201:
                errors.append(f"request {i}: HTTP {resp.status} {answer[:500]!r}")
                break
            mine.append((elapsed, answer, i))
        with lock:  # parsed after the loop, outside the timing
            for elapsed, answer, i in mine:
                data = orjson.loads(answer)
                latencies.append(elapsed)
                effects.append(data["effect"])
                if url != URL:
                    continue
                if data["effect"] != requests[i][2]:
                    wrong.append(f"request {i}: {data['effect']} != reference "
                                 f"{requests[i][2]}")
                if data.get("approval"):
                    approvals[0] += 1

    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(clients)]
    threads = [threading.Thread(target=client, args=(c,)) for c in conns]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    for conn in conns:
        conn.close()
    if errors:
        sys.exit("the API refused a decision: " + errors[0])
    return HttpResult(seconds, latencies, effects, reconnects[0], approvals[0], wrong)


def durable_insert_floor(db_url: str, count: int, clients: int, body: bytes) -> list[float]:
    """Milliseconds of ``count`` single-row INSERTs, each its own committed transaction, from
    ``clients`` connections at once, into a scratch table of the bench database: what one
    durable commit costs on this machine now (the floor under a stored decision, which no
    application code lowers). ``body`` is one decision's input document, as JSON."""
    import psycopg

    table_sql = "bench_commit_floor (id bigserial PRIMARY KEY, body jsonb NOT NULL)"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table_sql}")
    samples: list[float] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        mine = []
        with psycopg.connect(db_url, autocommit=True) as conn:
            for _ in range(n):
                started = time.perf_counter()
                conn.execute("INSERT INTO bench_commit_floor (body) VALUES (%s)",
                             [body.decode()])
                mine.append((time.perf_counter() - started) * 1000)
        with lock:
            samples.extend(mine)

    threads = [threading.Thread(target=client, args=(count // clients,)) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DROP TABLE bench_commit_floor")
    return samples


def warm_server(port: int, requests: list[tuple[str, bytes, str]]) -> None:
    """Untimed POSTs so every worker has imported everything, opened its DB connection and
    compiled each tenant's policy (sync workers: which worker answers is up to the kernel)."""
    for key, body, _ in requests:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", URL, body=body, headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
        conn.close()
        if resp.status != 201:
            sys.exit(f"warm-up POST answered {resp.status}: {answer[:300]!r}")


# -- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rules", type=int, default=50,
                        help="rules in the policy (the 50 written ones; more are copies "
                        "with globs that match nothing)")
    parser.add_argument("--decisions", type=int, default=10_000,
                        help="timed in-process decisions, for decide() and for "
                        "decide_tool_call (default %(default)s)")
    parser.add_argument("--requests", type=int, default=2_000,
                        help="HTTP requests per client phase (default %(default)s)")
    parser.add_argument("--pool", type=int, default=2_000,
                        help="distinct proposed calls, cycled (default %(default)s)")
    parser.add_argument("--clients", default="1,4",
                        help="client connections, one HTTP phase per value")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn sync workers (default: production's, "
                        "deploy/gunicorn.conf.py: WEB_CONCURRENCY or 2 x cores + 1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--profile-calls", type=int, default=1_000,
                        help="decide_tool_call calls under cProfile (0: no profile)")
    parser.add_argument("--profile-view", action="store_true",
                        help="also cProfile the API view in process (test Client)")
    add_db_arguments(parser, "decisions")
    args = parser.parse_args(argv)
    if args.workers is None:
        from bench.ingest import production_workers

        args.workers = production_workers()
    client_counts = [int(c) for c in args.clients.split(",") if c.strip()]

    specs = rule_specs(args.rules)
    pool = make_pool(args.pool, args.seed)
    reference = Reference(DEFAULT_EFFECT, specs)
    with_conditions = sum(1 for s in specs if s.cel)

    with bench_database(args) as db:
        from policies.engine import compiled_version
        from policies.services import ProposedCall, decide_tool_call

        print(environment_line(db))
        phases = [("inproc", False), ("inproc-outage", True)]
        if not args.skip_http:
            for c in client_counts:
                phases += [(f"http{c}", False), (f"http{c}-outage", True)]
        tenants = publish_everywhere(phases, specs)
        version = tenants["inproc"][2]
        policy = compiled_version(version.pk, version.checksum)
        assert len(policy.rules) == len(specs)
        effects_of_specs = Counter(s.effect for s in specs)
        print(f"policy: {len(specs)} rules ({with_conditions} with a CEL condition; "
              + ", ".join(f"{effects_of_specs[e]} {e}" for e in EFFECTS)
              + f"), default {DEFAULT_EFFECT}; published in {len(phases)} tenants "
              f"(half in outage mode)")

        # -- correctness: engine vs reference vs prototype, every input ---------------------
        docs = [c.doc("inproc-outage" if c.outage else "inproc") for c in pool]
        roots = referenced_roots(policy)
        reference.count = True
        mismatch_effect: list[tuple[Call, Any, Any]] = []
        mismatch_rules: list[tuple[Call, Any, Any]] = []
        mismatch_proto: list[tuple[Call, Any, Any]] = []
        matched_counts = []
        for call, doc in zip(pool, docs, strict=True):
            ref_effect, ref_rules = reference.decide(doc)
            call.expected, call.expected_rules = ref_effect, ref_rules
            got = policy.decide(doc)
            matched_counts.append(len(got.matched))
            if got.effect != ref_effect:
                mismatch_effect.append((call, got.effect, ref_effect))
            elif [m["name"] for m in got.matched] != ref_rules:
                mismatch_rules.append((call, [m["name"] for m in got.matched], ref_rules))
            for proto in (decide_one_context(policy, doc),
                          decide_one_context(policy, doc, roots)):
                if proto != (ref_effect, ref_rules):
                    mismatch_proto.append((call, proto, ref_effect))
        reference.count = False
        mix = Counter(c.expected for c in pool)
        print(f"\ninputs: {len(pool):,} distinct proposed calls, {sum(c.outage for c in pool)} "
              f"in outage; reference effects: "
              + ", ".join(f"{e} {mix[e]} ({mix[e] / len(pool):.0%})" for e in EFFECTS)
              + f"; rules matched per call: mean {sum(matched_counts) / len(pool):.1f}, "
              f"max {max(matched_counts)}; CEL conditions reached per call: mean "
              f"{reference.conditions_run / len(pool):.2f}; conditions erroring "
              f"(fail-closed path): {reference.condition_errors}")
        print(f"engine vs reference: {len(mismatch_effect)} effect mismatches, "
              f"{len(mismatch_rules)} matched-rule mismatches; one-Context prototypes vs "
              f"reference: {len(mismatch_proto)} mismatches (conditions name the roots "
              f"{', '.join(roots)})")
        for call, got, want in (mismatch_effect + mismatch_rules + mismatch_proto)[:5]:
            print(f"  MISMATCH {call.tool} {call.action_class} {call.agent_id} {call.mode} "
                  f"outage={call.outage} args={call.arguments}: engine/prototype {got}, "
                  f"reference {want}")

        # -- 1. embedded -------------------------------------------------------------------
        print(f"\n== 1. embedded decision in process: {args.decisions:,} decisions over the "
              f"pool (gc on; timer overhead {timer_overhead_us():.2f} us, included)",
              file=sys.stderr)
        gc.collect()
        engine_us, engine_s, engine_gc = timed_loop(policy.decide, docs, args.decisions)
        ref_us, ref_s, ref_gc = timed_loop(reference.decide, docs, args.decisions)
        proto_us, proto_s, proto_gc = timed_loop(lambda d: decide_one_context(policy, d), docs,
                                                 args.decisions)
        roots_us, roots_s, roots_gc = timed_loop(lambda d: decide_one_context(policy, d, roots),
                                                 docs, args.decisions)
        # by how many CEL conditions a decision reaches: where the time goes
        reference.count = True
        reached = []
        for doc in docs:
            before = reference.conditions_run
            reference.decide(doc)
            reached.append(reference.conditions_run - before)
        reference.count = False
        by_conditions: dict[int, list[list[float]]] = {}
        for i in range(args.decisions):
            slot = by_conditions.setdefault(reached[i % len(docs)], [[], [], []])
            slot[0].append(engine_us[i])
            slot[1].append(proto_us[i])
            slot[2].append(roots_us[i])

        print(f"\n== 1. embedded decision, in process, {len(specs)}-rule policy, "
              f"{args.decisions:,} decisions over {len(pool):,} distinct inputs (microseconds; "
              f"timer overhead {timer_overhead_us():.2f} us included)")
        rows = [stats_row("CompiledPolicy.decide(doc)", engine_us,
                          note=f"{args.decisions / engine_s:,.0f}/s; gc {engine_gc}"),
                stats_row("baseline: plain Python, same rules", ref_us,
                          note=f"{args.decisions / ref_s:,.0f}/s; gc {ref_gc}"),
                stats_row("prototype: one cel.Context a decision", proto_us,
                          note=f"{args.decisions / proto_s:,.0f}/s; gc {proto_gc}"),
                stats_row(f"prototype: same, only {'+'.join(roots)} in it", roots_us,
                          note=f"{args.decisions / roots_s:,.0f}/s; gc {roots_gc}")]
        print(table(["path", "n", "median", "p95", "p99", "p99.9", "max", "note"], rows))
        print("(gc: collections of generations 0/1/2 during the loop; the prototypes are bench "
              "code, not the app's engine)")
        print("\nby CEL conditions a decision reaches (its structural filters passed), "
              "microseconds:")
        print(table(["conditions", "decisions", "decide() p50", "decide() p99",
                     "1 Context p50", "1 Context p99", f"{'+'.join(roots)} only p50",
                     f"{'+'.join(roots)} only p99"],
                    [[k, len(v[0]), percentile(v[0], 50), percentile(v[0], 99),
                      percentile(v[1], 50), percentile(v[1], 99), percentile(v[2], 50),
                      percentile(v[2], 99)] for k, v in sorted(by_conditions.items())]))
        engine_p99 = percentile(engine_us, 99)
        embedded_ok = engine_p99 < TARGET_EMBEDDED_P99_US
        cost_rows, convert_full, convert_roots = condition_costs(policy, docs, roots)
        print(f"\nCEL conditions: evaluation alone, on a converted cel.Context (median us over "
              f"the inputs reaching each rule, 3 runs each). Converting the input document, "
              f"which program.execute(doc) does on every call: {convert_full:.1f} us the whole "
              f"document, {convert_roots:.1f} us {'+'.join(roots)} only (medians)")
        print(table(["rule", "effect", "inputs", "eval us", "condition"], cost_rows))
        print(f"\nembedded p99 {engine_p99:.1f} us (median {percentile(engine_us, 50):.1f} us; "
              f"plain Python {percentile(ref_us, 50):.1f} / {percentile(ref_us, 99):.1f} us)  "
              f"target p99 < {TARGET_EMBEDDED_P99_US:.0f} us: {verdict(embedded_ok)}")

        # -- 2. decide_tool_call in process -------------------------------------------------
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        from approvals.models import ApprovalRequest
        from policies.models import Decision

        tenant_of = {False: tenants["inproc"][0], True: tenants["inproc-outage"][0]}
        proposals = [(tenant_of[c.outage], ProposedCall(
            tool=c.tool, action_class=c.action_class, arguments=c.arguments, mode=c.mode,
            run_id=c.run_id, call_id=c.call_id, agent_id=c.agent_id), c.expected)
            for c in pool]
        service_wrong: list[str] = []
        service_effects: list[str] = []

        def service(item: tuple[Any, Any, str]) -> None:
            decision = decide_tool_call(item[0], item[1], asked_by="bench")
            service_effects.append(decision.effect)
            if decision.effect != item[2]:
                service_wrong.append(f"{item[1]}: {decision.effect} != {item[2]}")

        queries: dict[str, int] = {}
        query_text: dict[str, list[str]] = {}
        for tenant, proposed, expected in proposals:
            if expected not in queries:
                with CaptureQueriesContext(connection) as captured:
                    decide_tool_call(tenant, proposed, asked_by="bench")
                queries[expected] = len(captured)
                query_text[expected] = [q["sql"] for q in captured.captured_queries]
        print(f"\n== 2. decide_tool_call in process, {args.decisions:,} ...", file=sys.stderr)
        gc.collect()
        service_effects.clear()
        service_us, service_s, service_gc = timed_loop(service, proposals, args.decisions)
        timed_effects = service_effects[-args.decisions:]
        service_rows = [stats_row("decide_tool_call (all)", service_us, 1 / 1000,
                                  note=f"{args.decisions / service_s:,.0f}/s; gc {service_gc}")]
        for effect in EFFECTS:
            picked = [us for us, e in zip(service_us, timed_effects, strict=True) if e == effect]
            if picked:
                service_rows.append(stats_row(f"  {effect}", picked, 1 / 1000,
                                              note=f"{queries.get(effect, '?')} SQL queries"))
        in_tenants = [tenant_of[False], tenant_of[True]]
        stored = Decision.objects.filter(tenant__in=in_tenants).count()
        held = ApprovalRequest.objects.filter(tenant__in=in_tenants).count()
        print(f"\n== 2. decide_tool_call in process (+ Decision row, PostgreSQL), "
              f"{args.decisions:,} calls (milliseconds)")
        print(table(["path", "n", "median", "p95", "p99", "p99.9", "max", "note"],
                    service_rows))
        print(f"stored in the phase's tenants: {stored:,} decisions, {held:,} approval requests "
              f"(untimed pass + {len(queries)} query-count calls + timed loop); effects "
              f"differing from the reference: {len(service_wrong)}")
        for line in service_wrong[:5]:
            print("  WRONG", line)
        for effect in ("allow", "require_approval"):
            if effect in query_text:
                print(f"SQL of one {effect} decision:")
                for sql in query_text[effect]:
                    print(f"  {sql[:150]}{' ...' if len(sql) > 150 else ''}")

        view_row = None
        if not args.skip_http:
            # the view in process (Django test Client): the web stack minus gunicorn and TCP
            from django.test import Client

            _, view_key, _ = tenants["inproc"]
            client = Client(HTTP_HOST="127.0.0.1",
                            headers={"Authorization": f"Bearer {view_key}"})
            bodies = [c.body() for c in pool if not c.outage][:min(args.requests, 1000)]

            def post(body: bytes) -> None:
                resp = client.post(URL, data=body, content_type="application/json")
                assert resp.status_code == 201, resp.content[:300]

            post(bodies[0])
            with CaptureQueriesContext(connection) as captured:
                post(bodies[0])
            view_queries = [q["sql"] for q in captured.captured_queries]
            gc.collect()
            view_us, view_s, _ = timed_loop(post, bodies, len(bodies))
            view_row = [f"view in process (test Client), {len(view_queries)} queries",
                        len(view_us), percentile(view_us, 50) / 1000,
                        percentile(view_us, 95) / 1000, percentile(view_us, 99) / 1000,
                        max(view_us) / 1000, len(bodies) / view_s, "", "no HTTP, no gunicorn"]
            print(f"SQL of one POST {URL} through the view (test Client):")
            for sql in view_queries:
                print(f"  {sql[:150]}{' ...' if len(sql) > 150 else ''}")

        # -- 3. HTTP -------------------------------------------------------------------------
        http_rows: list[list[Any]] = []
        # clients -> (decisions, constant view, durable one-row INSERT) medians, ms
        http_medians: dict[int, tuple[float, float, float]] = {}
        if not args.skip_http:
            from bench.decisions_urls import CONSTANT_URL
            from bench.ingest import gunicorn

            with gunicorn(args.workers, "sync", 1, args.data_dir,
                          app="bench.decisions_wsgi:application") as (port, cmd):
                print(f"\nserver: {cmd}")
                for clients in client_counts:
                    plain, plain_key, _ = tenants[f"http{clients}"]
                    outage, outage_key, _ = tenants[f"http{clients}-outage"]
                    requests = [(outage_key if c.outage else plain_key, c.body(), c.expected)
                                for c in (pool[i % len(pool)] for i in range(args.requests))]
                    warm = ([r for r in requests if r[0] == plain_key][:12]
                            + [r for r in requests if r[0] == outage_key][:12])
                    warm_server(port, warm)
                    before_d = Decision.objects.filter(tenant__in=[plain, outage]).count()
                    before_a = ApprovalRequest.objects.filter(tenant__in=[plain, outage]).count()
                    print(f"HTTP x{clients} ...", file=sys.stderr)
                    # the baseline first, same bodies and keys, same server and clients
                    constant = post_decisions(port, requests, clients, CONSTANT_URL)
                    floor = durable_insert_floor(db.url, min(len(requests), 500), clients,
                                                 orjson.dumps(pool[0].doc(f"http{clients}")))
                    res = post_decisions(port, requests, clients)
                    stored = Decision.objects.filter(tenant__in=[plain, outage]).count() - before_d
                    held = (ApprovalRequest.objects.filter(tenant__in=[plain, outage]).count()
                            - before_a)
                    mix = Counter(res.effects)
                    assert stored == len(requests), (stored, len(requests))
                    assert held == mix["require_approval"] == res.approvals_returned, (
                        held, mix["require_approval"], res.approvals_returned)
                    latency_us = list(Decision.objects.filter(
                        tenant__in=[plain, outage]).order_by("-id")[:len(requests)]
                        .values_list("latency_us", flat=True))
                    name = f"HTTP, {clients} client{'s' * (clients > 1)}"
                    med = percentile(res.latencies_ms, 50)
                    http_rows.append([name, len(res.latencies_ms), med,
                                      percentile(res.latencies_ms, 95),
                                      percentile(res.latencies_ms, 99), max(res.latencies_ms),
                                      len(requests) / res.seconds,
                                      percentile(latency_us, 50) / 1000,
                                      f"{res.reconnects} reconnects; "
                                      f"{len(res.wrong)} wrong effects"])
                    for effect in EFFECTS:
                        picked = [ms for ms, e in zip(res.latencies_ms, res.effects,
                                                      strict=True) if e == effect]
                        if picked:
                            http_rows.append([f"  {effect}", len(picked),
                                              percentile(picked, 50), percentile(picked, 95),
                                              percentile(picked, 99), max(picked), "", "",
                                              "+ approval request" if
                                              effect == "require_approval" else ""])
                    const_med = percentile(constant.latencies_ms, 50)
                    floor_med = percentile(floor, 50)
                    http_medians[clients] = (med, const_med, floor_med)
                    http_rows.append([f"  baseline: constant view, {clients} client"
                                      f"{'s' * (clients > 1)}", len(constant.latencies_ms),
                                      const_med, percentile(constant.latencies_ms, 95),
                                      percentile(constant.latencies_ms, 99),
                                      max(constant.latencies_ms),
                                      len(requests) / constant.seconds, "",
                                      "plain Django view, same middleware"])
                    http_rows.append([f"  durable 1-row INSERT, {clients} connection"
                                      f"{'s' * (clients > 1)}", len(floor), floor_med,
                                      percentile(floor, 95), percentile(floor, 99), max(floor),
                                      "", "", "psycopg, autocommit: one commit each"])
                    for line in res.wrong[:5]:
                        print("  WRONG", line)
                    print(f"{name}: {stored:,} decisions stored, {held:,} approval requests "
                          f"opened ({held / len(requests):.0%}); mix "
                          + ", ".join(f"{e} {mix[e]}" for e in EFFECTS))
            if view_row is not None:
                http_rows.append(view_row)
            print(f"\n== 3. POST {URL} through gunicorn ({args.workers} sync workers), "
                  f"{args.requests:,} requests per phase (milliseconds)")
            print(table(["phase", "n", "median", "p95", "p99", "max", "decisions/s",
                         "server latency_us p50 (ms)", "note"], http_rows))
            print("(server latency_us: what decide_tool_call stores, from its start to just "
                  "before the Decision INSERT)")

        # -- summary -------------------------------------------------------------------------
        print("\n== summary")
        summary = [["embedded decide() p99, 50-rule policy", f"{engine_p99:.1f} us",
                    f"plain Python p99 {percentile(ref_us, 99):.1f} us",
                    f"< {TARGET_EMBEDDED_P99_US:.0f} us", verdict(embedded_ok)],
                   ["decide_tool_call in process, median / p99",
                    f"{percentile(service_us, 50) / 1000:.2f} / "
                    f"{percentile(service_us, 99) / 1000:.2f} ms", "", "(none)", ""]]
        for clients, (med, const_med, floor_med) in sorted(http_medians.items()):
            target = TARGET_HTTP_MEDIAN_MS.get(clients)
            summary.append([f"HTTP, {clients} client(s), median", f"{med:.2f} ms",
                            f"constant view {const_med:.2f} ms; durable INSERT "
                            f"{floor_med:.2f} ms",
                            "(none)" if target is None else f"< {target:.0f} ms",
                            "" if target is None else verdict(med < target)])
        print(table(["figure", "value", "beside it", "target", "verdict"], summary))
        print(f"load average (1/5/15 min): {load_average()}")
        ref_p99 = percentile(ref_us, 99)
        record_figure(BENCH, f"decide() p99, {len(specs)}-rule policy", f"{engine_p99:.1f} us",
                      f"< {TARGET_EMBEDDED_P99_US:.0f} us",
                      f"plain Python, same rules: p99 {ref_p99:.1f} us",
                      f"{engine_p99 / ref_p99:.1f}x", embedded_ok)
        for clients, (med, const_med, floor_med) in sorted(http_medians.items()):
            target = TARGET_HTTP_MEDIAN_MS.get(clients)
            record_figure(BENCH, f"POST {URL} median, {clients} client(s), decision stored",
                          f"{med:.2f} ms", "-" if target is None else f"< {target:.0f} ms",
                          f"constant view, same server and clients: {const_med:.2f} ms "
                          f"(a durable 1-row INSERT alone: {floor_med:.2f} ms)",
                          f"{med / const_med:.1f}x", None if target is None else med < target)
        bugs = len(mismatch_effect) + len(mismatch_rules) + len(mismatch_proto) + len(
            service_wrong)
        print(f"engine/reference disagreements: {bugs}")

        # -- profiles ------------------------------------------------------------------------
        if args.profile_calls:
            items = [proposals[i % len(proposals)] for i in range(args.profile_calls)]

            def loop() -> None:
                for tenant, proposed, _ in items:
                    decide_tool_call(tenant, proposed, asked_by="bench")

            print(f"\n== cProfile: {args.profile_calls:,} decide_tool_call calls in process")
            print(profile_text(loop, [("tottime", 25), ("cumulative", 45)]))
        if args.profile_view:
            from django.test import Client

            tenant, key, _ = tenants["inproc"]
            client = Client(HTTP_HOST="127.0.0.1", headers={"Authorization": f"Bearer {key}"})
            bodies = [c.body() for c in pool if not c.outage][:500]

            def view() -> None:
                for body in bodies:
                    resp = client.post(URL, data=body, content_type="application/json")
                    assert resp.status_code == 201, resp.content[:300]

            view()  # warm
            print(f"\n== cProfile: the API view in process (test Client), {len(bodies)} POSTs")
            print(profile_text(view, [("tottime", 25), ("cumulative", 50)]))


if __name__ == "__main__":
    main()
