"""Asking an OPA server: ``POST <url>/v1/data/<path>?provenance=true`` with
``{"input": <document>}``.

The answer's ``result`` is an effect (``"deny"``) or an object with ``effect`` and optionally
``reason`` and ``rules``. No whole answer by the version's deadline (``opa_timeout_ms``, for
everything from connecting to the last byte: an answer trickled slowly is no answer), an error,
or an answer that is not an effect gives the version's fallback effect (deny unless configured
otherwise): fail closed. So does an OPA URL the platform operator did not allow
(``LEDGER_EGRESS_ALLOW``): OPA is never asked then.

OPA's ``decision_id`` (present when its decision logs are on) and the revision of each bundle
it decided with (its provenance) are kept with the decision, so an auditor can find OPA's side
of it and knows which Rego decided.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx2

from core import egress

from .engine import Verdict
from .models import Effect, PolicyVersion


class _Late(Exception):
    pass


def decide_with_opa(version: PolicyVersion, doc: dict[str, Any]) -> Verdict:
    url = f"{version.opa_url.rstrip('/')}/v1/data/{version.opa_path.strip('/')}"
    if not url.startswith(("http://", "https://")):
        return _fallback(version, f"OPA URL {version.opa_url!r} is not http(s)")
    body = json.dumps({"input": doc}).encode()
    deadline_s = version.opa_timeout_ms / 1000
    try:
        status, content = _post_by(url, body, time.monotonic() + deadline_s)
    except egress.EgressRefused as exc:
        return _fallback(version, f"OPA was not asked: {exc}")
    except _Late:
        return _fallback(version, f"OPA did not answer within {version.opa_timeout_ms} ms")
    except httpx2.HTTPError as exc:
        return _fallback(version, f"OPA did not answer ({type(exc).__name__}: {exc})")
    if status >= 300:
        return _fallback(version, f"OPA answered HTTP {status}")
    try:
        answer = json.loads(content)
    except ValueError as exc:
        return _fallback(version, f"OPA did not answer JSON ({exc})")
    if not isinstance(answer, dict):
        return _fallback(version, "OPA's answer is not an object")
    provenance = _provenance(answer)
    result = answer.get("result")
    if isinstance(result, dict):
        effect, reason, rules = result.get("effect"), result.get("reason", ""), result.get(
            "rules", [])
    else:
        effect, reason, rules = result, "", []
    if not isinstance(effect, str) or effect not in Effect.values:
        return _fallback(version, f"OPA answered {str(result)[:200]!r}, which is not an effect",
                         provenance)
    names = rules if isinstance(rules, list) else []
    matched = [{"id": None, "name": str(name)[:200], "effect": effect} for name in names] or [
        {"id": None, "name": f"opa:{version.opa_path}", "effect": effect}]
    return Verdict(effect, matched, str(reason)[:1000] or
                   f"OPA {version.opa_path} decided {effect}", provenance=provenance)


def _post_by(url: str, body: bytes, deadline: float) -> tuple[int, bytes]:
    """POST and read the whole answer, giving up once ``deadline`` (monotonic) has passed.

    httpx's timeouts bound each step (connect, each read), not the whole; the answer is read
    chunk by chunk against the deadline, and each step's own timeout is what is left of it."""
    remaining = deadline - time.monotonic()
    egress.check_url(url)
    with egress.client().stream(
            "POST", url, params={"provenance": "true"}, content=body,
            headers={"Content-Type": "application/json"},
            timeout=httpx2.Timeout(remaining)) as response:
        chunks = []
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise _Late
        if time.monotonic() > deadline:
            raise _Late
        return response.status_code, b"".join(chunks)


def _provenance(answer: dict[str, Any]) -> dict[str, Any]:
    """OPA's decision id and bundle revisions, when it sent them (short strings only)."""
    found: dict[str, Any] = {}
    decision_id = answer.get("decision_id")
    if isinstance(decision_id, str):
        found["decision_id"] = decision_id[:200]
    bundles = (answer.get("provenance") or {}).get("bundles") if isinstance(
        answer.get("provenance"), dict) else None
    if isinstance(bundles, dict):
        found["bundles"] = {str(name)[:200]: str(info.get("revision", ""))[:200]
                            for name, info in list(bundles.items())[:50]
                            if isinstance(info, dict)}
    revision = (answer.get("provenance") or {}).get("revision") if isinstance(
        answer.get("provenance"), dict) else None
    if isinstance(revision, str):  # OPA with one legacy bundle reports a single revision
        found.setdefault("bundles", {})[""] = revision[:200]
    return found


def _fallback(version: PolicyVersion, why: str,
              provenance: dict[str, Any] | None = None) -> Verdict:
    effect = version.opa_fallback_effect
    return Verdict(effect, [{"id": None, "name": "opa-fallback", "effect": effect}],
                   f"{why}; the fallback effect applies", provenance=provenance or {})
