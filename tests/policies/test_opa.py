"""A policy that names an OPA decision path, against a real HTTP server on loopback that
speaks OPA's Data API; timeouts and errors fail closed."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from policies.models import Policy, PolicyVersion
from policies.services import ProposedCall, decide_tool_call
from runs.models import Tool


class FakeOpa(BaseHTTPRequestHandler):
    """OPA's Data API as OPA answers it: ``?provenance=true`` adds the bundle revisions, and
    with decision logs on every answer carries a ``decision_id``."""

    answers: dict[str, object] = {}
    delay = 0.0
    trickle = 0.0  # seconds between the bytes of the body, once the headers are out
    seen: list[dict] = []
    revision = "rev-2026-12-01"
    decision_logs = True

    def do_POST(self):
        path, _, query = self.path.partition("?")
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpa.seen.append({"path": path, "query": query, **body})
        time.sleep(FakeOpa.delay)
        answer = FakeOpa.answers.get(path)
        if answer is None:
            self.send_response(404)
            self.end_headers()
            return
        document: dict[str, object] = {"result": answer}
        if FakeOpa.decision_logs:
            document["decision_id"] = f"opa-decision-{len(FakeOpa.seen)}"
        if "provenance=true" in query:
            document["provenance"] = {"version": "0.70.0", "bundles": {
                "authz": {"revision": FakeOpa.revision}}}
        payload = json.dumps(document).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if not FakeOpa.trickle:
            self.wfile.write(payload)
            return
        for byte in payload:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(FakeOpa.trickle)

    def log_message(self, *args):
        pass


@pytest.fixture
def opa():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpa)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOpa.answers, FakeOpa.delay, FakeOpa.trickle, FakeOpa.seen = {}, 0.0, 0.0, []
    FakeOpa.decision_logs = True
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def opa_policy(acme, alice, dave, opa):
    from policies.services import create_draft, publish_policy_version

    policy = Policy.objects.create(tenant=acme, name="opa-tools")
    publish_policy_version(create_draft(policy, by=alice, change_note="delegate to OPA",
                                        engine="opa", opa_url=opa, opa_path="agents/tools/decision",
                                        opa_timeout_ms=300), by=dave)
    Tool.objects.create(tenant=acme, name="send_email", action_class="exfil")
    return policy


def decide(acme, **call):
    return decide_tool_call(acme, ProposedCall(**{"tool": "send_email", "action_class": "exfil",
                                                 "arguments": {"to": "a@example.com"},
                                                 "agent_id": "mailer", **call}))


def test_opa_decides_with_the_documented_input(acme, opa_policy):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = {"effect": "deny",
                                                         "reason": "no mail today",
                                                         "rules": ["freeze-mail"]}
    decision = decide(acme)
    assert decision.effect == "deny"
    assert decision.engine == "opa"
    assert decision.matched_rules[0]["name"] == "freeze-mail"
    sent = FakeOpa.seen[0]["input"]
    assert sent == decision.input
    assert sent["tool"] == {"name": "send_email", "action_class": "exfil", "registered": True}
    assert sent["args"] == {"to": "a@example.com"}
    assert sent["tenant"] == {"slug": "acme", "outage_mode": False}


def test_a_plain_effect_answer_is_accepted(acme, opa_policy):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = "allow"
    assert decide(acme).effect == "allow"


def test_a_slow_opa_fails_closed(acme, opa_policy):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = "allow"
    FakeOpa.delay = 1.0
    decision = decide(acme)
    assert decision.effect == "deny"
    assert "did not answer" in decision.reason


def test_an_unusable_answer_or_missing_path_fails_closed(acme, opa_policy):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = {"effect": "maybe"}
    assert decide(acme).effect == "deny"
    FakeOpa.answers.clear()
    assert decide(acme).effect == "deny"


def test_the_fallback_effect_is_configurable(acme, alice, dave, opa_policy):
    from policies.services import create_draft, publish_policy_version

    publish_policy_version(create_draft(opa_policy, by=alice,
                                        change_note="ask a person when OPA is down",
                                        opa_fallback_effect="require_approval",
                                        opa_url="http://127.0.0.1:9"), by=dave)
    decision = decide(acme)
    assert decision.effect == "require_approval"
    assert decision.approval is not None
    assert PolicyVersion.objects.filter(policy=opa_policy).count() == 2


def test_an_answer_trickled_past_the_deadline_is_no_answer(acme, opa_policy):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = "allow"
    FakeOpa.trickle = 0.02  # ~70 bytes: each byte well within 300 ms, the whole well past it
    started = time.monotonic()
    decision = decide(acme)
    assert decision.effect == "deny"
    assert "within 300 ms" in decision.reason
    assert time.monotonic() - started < 1.0  # bounded by the deadline, not by the sender


def test_opas_decision_id_and_bundle_revision_are_kept_with_the_decision(acme, opa_policy,
                                                                      user_client, alice):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = "allow"
    decision = decide(acme)
    assert FakeOpa.seen[0]["query"] == "provenance=true"
    version = PolicyVersion.objects.get(policy=opa_policy)
    assert decision.engine_answers == [{
        "policy": "opa-tools", "version": version.number, "decision_id": "opa-decision-1",
        "bundles": {"authz": "rev-2026-12-01"}}]
    trail = user_client(alice).get("/api/v1/policy-trail/", {"tenant": "acme"}).json()
    assert trail["results"][0]["engine_answers"][0]["decision_id"] == "opa-decision-1"


def test_the_engines_answer_is_kept_even_when_it_falls_back(acme, opa_policy):
    FakeOpa.answers["/v1/data/agents/tools/decision"] = {"effect": "perhaps"}
    FakeOpa.decision_logs = False
    decision = decide(acme)
    assert decision.effect == "deny"
    assert decision.engine_answers[0]["bundles"] == {"authz": "rev-2026-12-01"}
    assert "decision_id" not in decision.engine_answers[0]
