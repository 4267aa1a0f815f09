"""The demo's tool server: the tools the demo's agents call (``runs.sample_runs.TOOLS``), on
loopback, so replays (sandbox and live) and rollbacks have somewhere real to go.

``make demo`` runs it beside the portal (``manage.py demo_tools``); the seed starts it in a
thread while it seeds (or uses the one already running), and registers every tool's HTTP
connector at ``DEMO_TOOLS_ADDR`` (default 127.0.0.1:8765).

- ``POST /tools/<name>``: the tool. Its answer is computed from the arguments (``answer``), so
  a replay compares like with like; ``X-Dry-Run: true`` asks for the same answer without the
  side effect. A repeated ``Idempotency-Key`` gets the first answer again.
- ``POST /tools/<name>/compensate``: the compensating action of a tool that has one.
- ``GET /healthz``: says it is the demo's tool server (the seed looks before starting one).

Two behaviours are there on purpose, for the demo's story:

- refunds: the payment provider now holds every refund for review, so its answer says
  ``pending_review`` where the ledger recorded ``succeeded``: a replay of a refund diverges;
- compensations: a refund is reversed but the customer's e-mail about it cannot be recalled,
  so its rollback is partial (``remaining_side_effects``); a restart cannot be undone at all,
  so its rollback fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from runs.sample_runs import TOOLS

from .tool_server import Handler, Seen, ToolServer, http_tool_server, require_loopback

DEFAULT_ADDRESS = "127.0.0.1:8765"
DRY_RUN_HEADER = "X-Dry-Run"
HEALTH = {"service": "ledger-portal demo tools"}
REFUND_STATUS_RECORDED = "succeeded"  # what refunds answered when the demo's runs were recorded
REFUND_STATUS_NOW = "pending_review"
# Output fields each tool makes up anew on every call: left out of a replay's comparison.
VOLATILE = {"message_id", "refund_id", "etag", "results"}
REFUND_E_MAIL = "the customer was e-mailed that the refund was issued; an e-mail cannot be recalled"


def address() -> tuple[str, int]:
    """``DEMO_TOOLS_ADDR`` (host:port) as (host, port); loopback only (ValueError)."""
    raw = os.environ.get("DEMO_TOOLS_ADDR", "").strip() or DEFAULT_ADDRESS
    host, _, port = raw.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"DEMO_TOOLS_ADDR={raw!r}: expected host:port, e.g. {DEFAULT_ADDRESS}")
    require_loopback(host)
    return host, int(port)


def base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def _digest(tool: str, arguments: Any, size: int = 12) -> str:
    canonical = json.dumps([tool, arguments], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:size]


def answer(tool: str, arguments: Any) -> Any:
    """What ``tool`` answers now to ``arguments`` (the shapes the demo's agents recorded)."""
    args = arguments if isinstance(arguments, dict) else {}
    if tool in ("get_customer", "send_email", "update_ticket"):
        return {"ok": True, "ticket": args.get("ticket"),
                "message_id": f"m-{_digest(tool, arguments)}"}
    if tool == "refund_payment":
        return {"refund_id": f"re_{_digest(tool, arguments)}", "status": REFUND_STATUS_NOW}
    if tool in ("upload_report", "delete_record"):
        return {"ok": True, "etag": _digest(tool, arguments, 16)}
    return {"results": []}


def compensation(tool: str, original: Any) -> tuple[int, Any]:
    """What the compensating action of ``tool`` answers, given the call it undoes."""
    if tool == "refund_payment":
        output = original.get("output") if isinstance(original, dict) else None
        refund = output.get("refund_id") if isinstance(output, dict) else None
        return 200, {"reversed": refund, "remaining_side_effects": [REFUND_E_MAIL]}
    if tool == "restart_service":
        return 409, {"error": "a restart cannot be undone: the service is already running "
                     "again"}
    return 200, {"compensated": True}


def connector_settings(tool: str, url: str) -> dict[str, Any]:
    """The registry's settings that make ``tool`` reachable at the demo's server ``url``."""
    compensates = TOOLS[tool][1]
    return {"connector": "http", "endpoint": f"{url}/tools/{tool}",
            "compensate_endpoint": f"{url}/tools/{tool}/compensate" if compensates else "",
            "supports_rollback": compensates, "dry_run_via": "header",
            "dry_run_name": DRY_RUN_HEADER, "supports_idempotency": True, "timeout_ms": 5000,
            "volatile_fields": sorted(VOLATILE & _fields(tool))}


def _fields(tool: str) -> set[str]:
    output = answer(tool, {})
    return set(output) if isinstance(output, dict) else set()


class _Remembered:
    """The first answer to each idempotency key, so a repeated key has no second effect."""

    def __init__(self) -> None:
        self.answers: dict[tuple[str, str], tuple[int, Any]] = {}
        self.lock = threading.Lock()

    def once(self, path: str, seen: Seen, make: Callable[[], tuple[int, Any]]
             ) -> tuple[int, Any]:
        key = seen.header("Idempotency-Key")
        if not key or seen.header(DRY_RUN_HEADER) == "true":
            return make()
        with self.lock:
            if (path, key) not in self.answers:
                self.answers[(path, key)] = make()
            return self.answers[(path, key)]


def routes() -> dict[str, Handler]:
    remembered = _Remembered()
    table: dict[str, Handler] = {"/healthz": lambda seen: (200, HEALTH)}
    for tool, (_class, compensates, _agents) in TOOLS.items():
        path = f"/tools/{tool}"

        def call(seen: Seen, tool: str = tool, path: str = path) -> tuple[int, Any]:
            return remembered.once(path, seen, lambda: (200, answer(tool, seen.body)))

        table[path] = call
        if compensates:
            def undo(seen: Seen, tool: str = tool, path: str = path + "/compensate"
                     ) -> tuple[int, Any]:
                return remembered.once(path, seen, lambda: compensation(tool, seen.body))

            table[path + "/compensate"] = undo
    return table


def serve(host: str, port: int, log: Callable[[str], None] | None = None
          ) -> AbstractContextManager[ToolServer]:
    """The demo's tool server on ``host:port`` while the block runs."""
    return http_tool_server(host, port, routes(), log)


def already_serving(url: str) -> bool:
    """Does the demo's tool server answer at ``url``?"""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310
            return bool(json.loads(response.read()) == HEALTH)
    except (OSError, ValueError):
        return False


@contextmanager
def available(host: str, port: int) -> Iterator[ToolServer | None]:
    """The demo's tools reachable at ``host:port`` while the block runs: the server already
    there (None), or one started in a thread now. OSError when something else holds the port."""
    if already_serving(base_url(host, port)):
        yield None
        return
    with serve(host, port) as server:
        yield server
