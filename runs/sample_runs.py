"""Realistic ledger data: the generator the demo (``manage.py seed_demo``), the tests and every
benchmark share (``python -m bench.generate`` loads it into a database).

Runs are produced as ingestion batches (the API's own format), so loading them goes through
the same validation, idempotency and chaining as an agent's batches. Deterministic per seed.
Standard library only.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

AGENTS = {
    "support-triage": ["Triage ticket {n}: classify, answer or escalate",
                       "Resolve refund request on ticket {n}"],
    "billing-reconciler": ["Reconcile invoices for account {n}",
                           "Issue credit note for disputed charge {n}"],
    "infra-oncall": ["Investigate alert {n}: high error rate on checkout",
                     "Restart degraded workers after alert {n}"],
    "data-exporter": ["Prepare quarterly usage report {n}", "Sync CRM contacts batch {n}"],
    "code-reviewer": ["Review pull request #{n}", "Apply lint fixes on branch fix-{n}"],
}
# tool -> (action class, supports rollback, agents that use it)
TOOLS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "search_tickets": ("read", False, ("support-triage",)),
    "get_customer": ("read", False, ("support-triage", "billing-reconciler", "data-exporter")),
    "update_ticket": ("write", True, ("support-triage",)),
    "send_email": ("exfil", False, ("support-triage", "billing-reconciler")),
    "refund_payment": ("write", True, ("support-triage", "billing-reconciler")),
    "query_ledger_db": ("read", False, ("billing-reconciler", "data-exporter")),
    "delete_record": ("delete", False, ("data-exporter", "billing-reconciler")),
    "upload_report": ("exfil", False, ("data-exporter",)),
    "get_metrics": ("read", False, ("infra-oncall",)),
    "restart_service": ("write", True, ("infra-oncall",)),
    "scale_deployment": ("write", True, ("infra-oncall",)),
    "read_file": ("read", False, ("code-reviewer",)),
    "create_pull_request": ("write", True, ("code-reviewer",)),
    "post_comment": ("write", True, ("code-reviewer", "support-triage")),
}
MODELS = [("openai", "gpt-4.1"), ("anthropic", "claude-sonnet-4"), ("google", "gemini-2.5-pro")]
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton"]
ERRORS = [("TimeoutError", "upstream did not answer within 30s"),
          ("HTTPError", "503 Service Unavailable"),
          ("PermissionError", "token lacks scope write:payments")]


def _ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class RunGenerator:
    """Yields runs (ingestion format) for one tenant."""

    def __init__(self, tenant_slug: str, seed: int = 7, start: datetime | None = None,
                 long_run_share: float = 0.03, unique: bool = False):
        self.tenant = tenant_slug
        self.rng = random.Random(f"{seed}:{tenant_slug}")
        self.clock = start or datetime(2026, 10, 1, tzinfo=UTC)
        self.long_run_share = long_run_share
        self.counter = 0
        # unique: every e-mail address, secret and piece of free text differs from record to
        # record, as in real traffic. Without it they come from small pools (63 addresses, 3
        # error messages, 9 queries): the redaction engine's per-string cache then answers
        # most of them, which flatters a benchmark. Same shapes and sizes either way; the
        # default draws exactly what it always drew (tests and the demo depend on it).
        self.unique = unique
        self.serial = 0

    def _tag(self) -> str:
        """A token no other record of this generator carries (unique mode)."""
        self.serial += 1
        return f"{self.serial:x}{self.rng.randrange(36**4):04x}"

    def _customer(self) -> dict[str, Any]:
        rng = self.rng
        first, last = rng.choice(FIRST), rng.choice(LAST)
        mailbox = f"{first.lower()}.{last.lower()}"
        if self.unique:
            mailbox += f".{self._tag()}"
        return {"name": f"{first} {last}",
                "email": f"{mailbox}@example.com",
                "phone": f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
                "tier": rng.choice(["free", "pro", "enterprise"])}

    def _tool_io(self, tool: str, n: int) -> tuple[dict[str, Any], Any, dict[str, str]]:
        rng = self.rng
        if tool in ("get_customer", "send_email", "update_ticket"):
            customer = self._customer()
            labels = {"input.customer.email": "confidential", "input.customer.phone":
                      "confidential"}
            return ({"ticket": f"T-{n}", "customer": customer},
                    {"ok": True, "ticket": f"T-{n}", "message_id": f"m-{rng.randrange(10**9)}"},
                    labels)
        if tool == "refund_payment":
            return ({"payment_id": f"pay_{rng.randrange(10**8)}",
                     "amount_cents": rng.randint(500, 50000), "currency": "EUR",
                     "api_token": f"sk_live_{rng.randrange(16**24):024x}"},
                    {"refund_id": f"re_{rng.randrange(10**8)}", "status": "succeeded"},
                    {"input.api_token": "secret"})
        if tool in ("upload_report", "delete_record"):
            return ({"bucket": "s3://reports-eu/quarterly", "key": f"usage-{n}.csv",
                     "rows": rng.randint(10, 50000)},
                    {"ok": True, "etag": f"{rng.randrange(16**16):016x}"}, {})
        query = f"status:open assignee:none page:{rng.randint(1, 9)}"
        if self.unique:  # what an agent searches for: a phrase of the ticket at hand
            query += f" text:\"card declined twice on order {self._tag()}\""
        return ({"query": query,
                 "limit": rng.choice([10, 25, 50])},
                {"results": [{"id": f"R-{rng.randrange(10**6)}", "score":
                              round(rng.random(), 3)} for _ in range(rng.randint(0, 4))]}, {})

    def model_call(self, run_id: str, step: int, prompt: str, now: datetime
                   ) -> dict[str, Any]:
        """The model call that opens step ``step`` (0-based) of a run, started at ``now``."""
        rng = self.rng
        provider, model = rng.choice(MODELS)
        latency = rng.randint(300, 4000)
        return {
            "call_id": f"{run_id}-m{step + 1}", "step_id": f"s{step + 1}",
            "provider": provider, "model": model,
            "messages": [{"role": "system", "content": "You are a careful operations agent."},
                         {"role": "user", "content": prompt + (
                             f" (turn {step + 1}, context {self._tag()})" if self.unique
                             else "")}],
            "response": {"role": "assistant", "content": f"Plan step {step + 1}: use tools." + (
                f" Checking {self._tag()} first." if self.unique else "")},
            "usage": {"input_tokens": rng.randint(200, 6000),
                      "output_tokens": rng.randint(20, 900)},
            "latency_ms": latency, "started_at": _ts(now),
            "ended_at": _ts(now + timedelta(milliseconds=latency))}

    def run(self) -> dict[str, Any]:
        rng = self.rng
        self.counter += 1
        n = self.counter
        agent = rng.choice(list(AGENTS))
        tools = [t for t, (_, _, users) in TOOLS.items() if agent in users]
        started = self.clock
        self.clock += timedelta(seconds=rng.randint(5, 240))
        long_run = rng.random() < self.long_run_share
        n_steps = rng.randint(8, 30) if long_run else rng.randint(2, 6)
        run_id = f"{self.tenant}-run-{n:07d}"
        steps: list[dict[str, Any]] = []
        model_calls: list[dict[str, Any]] = []
        tool_calls: list[dict[str, Any]] = []
        now = started
        failed = False
        for s in range(n_steps):
            step_id = f"s{s + 1}"
            step_start = now
            call = self.model_call(run_id, s, AGENTS[agent][0].format(n=n), now)
            model_calls.append(call)
            now += timedelta(milliseconds=call["latency_ms"])
            calls_here = rng.randint(4, 12) if long_run else rng.randint(1, 3)
            for c in range(calls_here):
                tool = rng.choice(tools)
                action, rollback, _ = TOOLS[tool]
                call_id = f"{run_id}-t{s + 1}.{c + 1}"
                attempts = 1 + (rng.random() < 0.08) + (rng.random() < 0.02)
                for attempt in range(1, attempts + 1):
                    tool_input, output, labels = self._tool_io(tool, n)
                    duration = rng.randint(20, 2500)
                    fails = attempt < attempts or rng.random() < 0.03
                    err = rng.choice(ERRORS) if fails else None
                    if err and self.unique:
                        err = (err[0], f"{err[1]} (request {self._tag()})")
                    this_id = call_id if attempt == 1 else f"{call_id}-r{attempt}"
                    tool_calls.append({
                        "call_id": this_id, "step_id": step_id, "tool": tool,
                        "action_class": action, "input": tool_input,
                        "output": None if fails else output,
                        "status": "failed" if fails else "succeeded",
                        "error": {"type": err[0], "message": err[1]} if err else None,
                        "attempt": attempt,
                        "retry_of": call_id if attempt == 2 else (
                            f"{call_id}-r{attempt - 1}" if attempt > 2 else None),
                        "started_at": _ts(now),
                        "ended_at": _ts(now + timedelta(milliseconds=duration)),
                        "idempotency_key": f"idem-{call_id}" if action != "read" else "",
                        "supports_rollback": rollback, "classifications": labels})
                    now += timedelta(milliseconds=duration)
                    failed = failed or (fails and attempt == attempts)
            steps.append({"step_id": step_id, "index": s + 1,
                          "title": f"Step {s + 1} of {AGENTS[agent][0].format(n=n)}"[:200],
                          "status": "done", "started_at": _ts(step_start), "ended_at": _ts(now)})
        status = "failed" if failed else rng.choice(["succeeded"] * 9 + ["running"])
        return {
            "run_id": run_id, "agent_id": agent, "agent_name": agent.replace("-", " ").title(),
            "goal": rng.choice(AGENTS[agent]).format(n=n),
            "trigger_ref": f"ALERT-{rng.randint(1000, 9999)}" if agent == "infra-oncall"
            else f"REQ-{n}",
            "status": status, "started_at": _ts(started),
            "ended_at": None if status == "running" else _ts(now),
            "metadata": {"framework": rng.choice(["langgraph", "openai-agents", "crewai"]),
                         "version": "1.4.2"},
            "steps": steps, "model_calls": model_calls, "tool_calls": tool_calls,
        }


def big_run(tenant_slug: str, tool_calls: int = 1000, steps: int = 50, seed: int = 11
            ) -> dict[str, Any]:
    """One run in the ingestion format with exactly ``tool_calls`` tool calls over ``steps``
    steps, a model call each, every tenth call a retry of a failed one (the benchmarks' long
    runs, and the tests of long runs)."""
    gen = RunGenerator(tenant_slug, seed=seed)
    rng = gen.rng
    agent = "support-triage"
    tools = [t for t, (_, _, users) in TOOLS.items() if agent in users]
    run_id = f"{tenant_slug}-run-big-{tool_calls}"
    started = now = datetime(2026, 11, 1, tzinfo=UTC)
    per_step = -(-tool_calls // steps)

    def ts(moment: datetime) -> str:
        return moment.isoformat().replace("+00:00", "Z")

    step_list: list[dict[str, Any]] = []
    model_calls: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for s in range(steps):
        step_id, step_start = f"s{s + 1}", now
        call = gen.model_call(run_id, s, AGENTS[agent][0].format(n=s), now)
        model_calls.append(call)
        now += timedelta(milliseconds=call["latency_ms"])
        for _ in range(per_step):
            i = len(calls)
            if i >= tool_calls:
                break
            retry = i % 10 == 9 and i % per_step != 0  # the 10th call retries the 9th
            fails = i % 10 == 8 and i + 1 < tool_calls and (i + 1) % per_step != 0
            if retry:
                original = calls[-1]
                tool, call_id = original["tool"], f"{original['call_id']}-r2"
            else:
                tool, call_id = rng.choice(tools), f"{run_id}-t{i + 1}"
            action, rollback, _ = TOOLS[tool]
            tool_input, output, labels = gen._tool_io(tool, i)
            duration = rng.randint(20, 2500)
            calls.append({
                "call_id": call_id, "step_id": step_id, "tool": tool, "action_class": action,
                "input": tool_input, "output": None if fails else output,
                "status": "failed" if fails else "succeeded",
                "error": {"type": "TimeoutError", "message": "upstream did not answer"}
                if fails else None,
                "attempt": 2 if retry else 1,
                "retry_of": calls[-1]["call_id"] if retry else None,
                "started_at": ts(now), "ended_at": ts(now + timedelta(milliseconds=duration)),
                "idempotency_key": f"idem-{call_id}" if action != "read" else "",
                "supports_rollback": rollback, "classifications": labels})
            now += timedelta(milliseconds=duration)
        step_list.append({"step_id": step_id, "index": s + 1, "title": f"Step {s + 1}",
                          "status": "done", "started_at": ts(step_start), "ended_at": ts(now)})
    assert len(calls) == tool_calls
    return {"run_id": run_id, "agent_id": agent, "agent_name": "Support Triage",
            "goal": "Work through the backlog", "trigger_ref": "REQ-BIG", "status": "succeeded",
            "started_at": ts(started), "ended_at": ts(now),
            "metadata": {"framework": "langgraph", "version": "1.4.2"},
            "steps": step_list, "model_calls": model_calls, "tool_calls": calls}


def record_count(run: dict[str, Any]) -> int:
    return 1 + sum(len(run[k]) for k in ("steps", "model_calls", "tool_calls", "annotations")
                   if k in run)


def batches(runs: Iterator[dict[str, Any]], max_records: int = 1000
            ) -> Iterator[list[dict[str, Any]]]:
    """Pack runs into batches under the record limit; a bigger run is split across batches
    (later batches append to it, as a still-running agent would)."""
    batch: list[dict[str, Any]] = []
    size = 0
    for run in runs:
        for part in split_run(run, max_records):
            n = record_count(part)
            if batch and size + n > max_records:
                yield batch
                batch, size = [], 0
            batch.append(part)
            size += n
    if batch:
        yield batch


def split_run(run: dict[str, Any], max_records: int) -> Iterator[dict[str, Any]]:
    if record_count(run) <= max_records:
        yield run
        return
    header = {k: v for k, v in run.items() if k not in ("steps", "model_calls", "tool_calls")}
    final_status, final_end = run["status"], run["ended_at"]
    chunk: dict[str, list[Any]] = {"steps": [], "model_calls": [], "tool_calls": []}
    size = 1
    for kind in ("steps", "model_calls", "tool_calls"):
        for record in run[kind]:
            if size + 1 > max_records:
                yield {**header, "status": "running", "ended_at": None, **chunk}
                chunk = {"steps": [], "model_calls": [], "tool_calls": []}
                size = 1
            chunk[kind].append(record)
            size += 1
    yield {**header, "status": final_status, "ended_at": final_end, **chunk}


def generate_runs(tenant_slug: str, tool_calls: int, seed: int = 7, unique: bool = False
                  ) -> Iterator[dict[str, Any]]:
    gen = RunGenerator(tenant_slug, seed=seed, unique=unique)
    made = 0
    while made < tool_calls:
        run = gen.run()
        made += len(run["tool_calls"])
        yield run
