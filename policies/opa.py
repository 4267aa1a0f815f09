"""Asking an OPA server: ``POST <url>/v1/data/<path>`` with ``{"input": <document>}``.

The answer's ``result`` is an effect (``"deny"``) or an object with ``effect`` and optionally
``reason`` and ``rules``. No answer in time, an error, or an answer that is not an effect gives
the policy's fallback effect (deny unless configured otherwise): fail closed. So does an OPA URL
the platform operator did not allow (``LEDGER_EGRESS_ALLOW``): OPA is never asked then.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from runs import egress

from .engine import Verdict
from .models import Effect, Policy


def decide_with_opa(policy: Policy, doc: dict[str, Any]) -> Verdict:
    url = f"{policy.opa_url.rstrip('/')}/v1/data/{policy.opa_path.strip('/')}"
    if not url.startswith(("http://", "https://")):
        return _fallback(policy, f"OPA URL {policy.opa_url!r} is not http(s)")
    body = json.dumps({"input": doc}).encode()
    try:
        response = egress.post(url, content=body, timeout=policy.opa_timeout_ms / 1000,
                               headers={"Content-Type": "application/json"})
    except egress.EgressRefused as exc:
        return _fallback(policy, f"OPA was not asked: {exc}")
    except httpx2.HTTPError as exc:
        return _fallback(policy, f"OPA did not answer ({type(exc).__name__}: {exc})")
    if response.status_code >= 300:
        return _fallback(policy, f"OPA answered HTTP {response.status_code}")
    try:
        answer = json.loads(response.content)
    except ValueError as exc:
        return _fallback(policy, f"OPA did not answer JSON ({exc})")
    result = answer.get("result") if isinstance(answer, dict) else None
    if isinstance(result, dict):
        effect, reason, rules = result.get("effect"), result.get("reason", ""), result.get(
            "rules", [])
    else:
        effect, reason, rules = result, "", []
    if effect not in Effect.values:
        return _fallback(policy, f"OPA answered {result!r}, which is not an effect")
    matched = [{"id": None, "name": str(name), "effect": effect} for name in rules] or [
        {"id": None, "name": f"opa:{policy.opa_path}", "effect": effect}]
    return Verdict(effect, matched, reason or f"OPA {policy.opa_path} decided {effect}")


def _fallback(policy: Policy, why: str) -> Verdict:
    effect = policy.opa_fallback_effect
    return Verdict(effect, [{"id": None, "name": "opa-fallback", "effect": effect}],
                   f"{why}; the fallback effect applies")
