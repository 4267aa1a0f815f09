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
    answers: dict[str, object] = {}
    delay = 0.0
    seen: list[dict] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpa.seen.append({"path": self.path, **body})
        time.sleep(FakeOpa.delay)
        answer = FakeOpa.answers.get(self.path)
        if answer is None:
            self.send_response(404)
            self.end_headers()
            return
        payload = json.dumps({"result": answer}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def opa():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpa)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FakeOpa.answers, FakeOpa.delay, FakeOpa.seen = {}, 0.0, []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def opa_policy(acme, alice, dave, opa):
    from policies.services import create_draft, publish_policy_version

    policy = Policy.objects.create(tenant=acme, name="opa-tools", engine="opa", opa_url=opa,
                                   opa_path="agents/tools/decision", opa_timeout_ms=300)
    publish_policy_version(create_draft(policy, alice, "delegate to OPA"), dave)
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


def test_the_fallback_effect_is_configurable(acme, opa_policy):
    Policy.objects.filter(pk=opa_policy.pk).update(opa_fallback_effect="require_approval",
                                                   opa_url="http://127.0.0.1:9")
    decision = decide(acme)
    assert decision.effect == "require_approval"
    assert decision.approval is not None
    assert PolicyVersion.objects.filter(policy=opa_policy).count() == 1
