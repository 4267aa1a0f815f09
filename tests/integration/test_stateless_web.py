"""What a person or an agent relies on holds across web processes: two gunicorn processes (as
``deploy/entrypoint.sh web`` runs them, the way two machines behind a load balancer would) on
one PostgreSQL and Redis, each request sent to one or the other.

- a session signed in through one process is signed in on the other, and signing out through
  one ends it on both;
- wrong passwords count towards the lockout wherever they are tried;
- an API key's rate limit counts requests to both: alternating, or sending at once to both,
  does not buy more than the quota;
- a key revoked through one process is refused by the other at once;
- an approval decided through one process ends the long-poll an agent holds on the other, and
  the agent's next decision there is cleared by it;
- a tenant's outage switched through one process applies to the other's next decision, and a
  policy version published while a process has the previous one compiled decides its next
  decision (nothing of a tenant's policy is kept per process but what a checksum pins).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from tests.integration.test_scale_out import web_processes

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
RATE = 10  # requests a minute per key, in both processes


class Answer:
    def __init__(self, status: int, headers: dict[str, str], cookies: dict[str, str],
                 body: bytes) -> None:
        self.status, self.headers, self.cookies, self.body = status, headers, cookies, body

    def json(self) -> Any:
        return json.loads(self.body)


def send(base: str, method: str, path: str, *, token: str = "", body: Any = None,
         form: dict[str, str] | None = None, cookies: dict[str, str] | None = None,
         headers: dict[str, str] | None = None) -> Answer:
    """One request to one web process. Cookies are kept by the caller (the session cookie is
    ``Secure``, which a cookie jar would not send over the loopback's plain HTTP)."""
    from urllib.parse import urlencode

    parts = urlsplit(base)
    sent = {"Host": "127.0.0.1", **(headers or {})}
    data = None
    if token:
        sent["Authorization"] = f"Bearer {token}"
    if body is not None:
        data, sent["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data = urlencode(form).encode()
        sent["Content-Type"] = "application/x-www-form-urlencoded"
    if cookies:
        sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=60)
    try:
        conn.request(method, path, body=data, headers=sent)
        resp = conn.getresponse()
        got = {}
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie":
                cookie, _, _ = value.partition(";")
                key, _, val = cookie.partition("=")
                got[key.strip()] = val.strip()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, got,
                      resp.read())
    finally:
        conn.close()


@pytest.fixture(scope="module")
def two_webs(django_db_setup: Any, tmp_path_factory: Any) -> Iterator[list[str]]:
    """Two gunicorn web processes with the repository's config, each on its own port, as on two
    machines: each with its own data folder, sharing only the database, Redis and the two keys
    every machine must be given (``SECRET_KEY``, ``LEDGER_SIGNING_KEY``: without them each
    machine makes its own in its data folder). API keys are limited to RATE/min."""
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    from core import signing

    tmp_path = tmp_path_factory.mktemp("webs")
    signing.signing_key()  # this installation's key: made in the test's data folder if missing
    signing_key_file = Path(settings.DATA_DIR) / "signing_key.pem"
    yield from web_processes(tmp_path, lambda n: {
        "LEDGER_API_RATE": f"{RATE}/min", "LEDGER_APPROVAL_MAX_WAIT": "30",
        "LEDGER_API_KEY_TOUCH_INTERVAL": "0", "LEDGER_DATA_DIR": str(tmp_path / f"data-{n}"),
        "LEDGER_SIGNING_KEY_FILE": str(signing_key_file)})


def test_both_processes_sign_with_the_same_key(two_webs):
    from core import signing

    keys = [send(url, "GET", "/api/v1/signing-key/").json()["public_key"] for url in two_webs]
    assert keys == [signing.public_key_b64()] * 2


# -- people ------------------------------------------------------------------------------------

def _sign_in(base: str, password: str = "pw-for-tests-only") -> Answer:
    page = send(base, "GET", "/admin/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
    assert token is not None, page.body[:500]
    return send(base, "POST", "/admin/login/?next=/admin/", cookies=page.cookies,
                form={"username": "alice", "password": password, "next": "/admin/",
                      "csrfmiddlewaretoken": token.group(1).decode()},
                headers={"Referer": f"{base}/admin/login/"})


def test_a_session_signed_in_on_one_process_is_signed_in_on_the_other(two_webs, alice):
    first, second = two_webs
    signed_in = _sign_in(first)
    assert signed_in.status == 302, signed_in.body[:500]
    session = {"sessionid": signed_in.cookies["sessionid"]}
    assert send(first, "GET", "/admin/", cookies=session).status == 200
    assert send(second, "GET", "/admin/", cookies=session).status == 200
    assert send(second, "GET", "/approvals/", cookies=session).status == 200

    # signing out through the second ends the session on the first too
    page = send(second, "GET", "/admin/", cookies=session)
    csrf = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page.body)
    assert csrf is not None
    out = send(second, "POST", "/admin/logout/", cookies={**session, **page.cookies},
               form={"csrfmiddlewaretoken": csrf.group(1).decode()},
               headers={"Referer": f"{second}/admin/"})
    assert out.status in (200, 302), out.body[:300]
    gone = send(first, "GET", "/admin/", cookies=session)
    assert gone.status == 302
    assert "/admin/login/" in gone.headers["location"]


def test_wrong_passwords_count_towards_the_lockout_on_every_process(two_webs, alice):
    answers = [_sign_in(two_webs[i % 2], "wrong").status for i in range(5)]
    assert answers == [200, 200, 200, 200, 429]  # the form again, then locked
    for url in two_webs:  # the right password is refused on both now
        assert _sign_in(url).status == 429


# -- agents ------------------------------------------------------------------------------------

def test_alternating_processes_does_not_double_a_keys_quota(two_webs, acme, api_key):
    key = api_key(acme, ["ingest", "view_ledger"])
    answers = [send(two_webs[i % 2], "GET", "/api/v1/runs/", token=key).status
               for i in range(2 * RATE)]
    assert answers == [200] * RATE + [429] * RATE


def test_requests_sent_at_once_to_both_processes_do_not_exceed_a_keys_quota(two_webs, acme,
                                                                           api_key):
    """Four clients at a time, two on each process (each of which serves two at once): the
    count is one counter in Redis, so no request is let through on a count another one was
    raising at the same moment."""
    key = api_key(acme, ["ingest", "view_ledger"])
    answers: list[int] = []
    lock = threading.Lock()

    def client(url: str) -> None:
        for _ in range(RATE):
            status = send(url, "GET", "/api/v1/runs/", token=key).status
            with lock:
                answers.append(status)

    threads = [threading.Thread(target=client, args=(two_webs[i % 2],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(answers)) == [200, 429]
    assert answers.count(200) == RATE, answers


def test_a_key_revoked_is_refused_by_both_processes_at_once(two_webs, acme, api_key):
    from core.models import ApiKey
    from core.services import revoke_api_key

    first, second = two_webs
    key = api_key(acme, ["ingest", "view_ledger"])
    assert send(second, "GET", "/api/v1/runs/", token=key).status == 200
    # keys are revoked in the admin, which calls this service
    revoke_api_key(ApiKey.objects.get(prefix=key.split("_")[1]))
    refused = send(second, "GET", "/api/v1/runs/", token=key)
    assert refused.status == 401
    assert b"revoked" in refused.body
    assert send(first, "GET", "/api/v1/runs/", token=key).status == 401


def _rule_policy(tenant: Any, effect: str, note: str, outage: str = "any") -> Any:
    """Publish a version of policy ``payments`` whose one rule gives ``effect`` to refunds
    (during an outage only, with ``outage="only"``); the default allows."""
    from django.contrib.auth.models import User

    from core.roles import Role
    from core.services import grant_role
    from policies.models import Policy, Rule
    from policies.services import create_draft, publish_policy_version
    from runs.governance_log import setting_up
    from runs.models import Tool

    with setting_up():
        Tool.objects.get_or_create(tenant=tenant, name="refund",
                                   defaults={"action_class": "write"})
        publisher, _ = User.objects.get_or_create(username="publisher")
        grant_role(publisher, Role.MANAGE_POLICIES, tenant)
    policy, _ = Policy.objects.get_or_create(tenant=tenant, name="payments")
    draft = create_draft(policy, by=None, change_note=note, default_effect="allow")
    draft.rules.all().delete()
    Rule.objects.create(tenant=tenant, version=draft, name=note, tool="refund", effect=effect,
                        outage=outage)
    return publish_policy_version(draft, by=publisher)


def _decide(url: str, key: str, call_id: str, approval_id: int | None = None
            ) -> dict[str, Any]:
    answer = send(url, "POST", "/api/v1/decisions/", token=key, body={
        "run_id": "stateless", "call_id": call_id, "agent_id": "pay-bot", "tool": "refund",
        "action_class": "write", "arguments": {"amount_cents": 1200},
        "approval_id": approval_id})
    assert answer.status == 201, answer.body[:500]
    found: dict[str, Any] = answer.json()
    return found


def test_an_approval_decided_through_one_process_ends_the_wait_on_the_other(two_webs, acme,
                                                                           alice, api_key):
    from core.access_tokens import issue_personal_token

    first, second = two_webs
    _rule_policy(acme, "require_approval", "refunds wait for a person")
    key = api_key(acme, ["ingest", "view_ledger"])
    asked = _decide(second, key, "refund-1")
    assert asked["effect"] == "require_approval"
    approval_id = asked["approval"]["id"]
    waited: list[Answer] = []
    waiter = threading.Thread(target=lambda: waited.append(send(
        second, "GET", f"/api/v1/approvals/{approval_id}/?wait=25", token=key)))
    waiter.start()
    _, token = issue_personal_token(alice, "approve", ["approve"])
    decided = send(first, "POST", f"/api/v1/approvals/{approval_id}/decision/", token=token,
                   body={"decision": "approve", "justification": "refund checked"})
    assert decided.status == 200, decided.body[:500]
    waiter.join(timeout=30)
    assert waited
    assert waited[0].status == 200
    assert waited[0].json()["status"] == "approved"
    again = _decide(second, key, "refund-1", approval_id)
    assert again["effect"] == "allow", again


def test_outage_and_a_new_policy_version_apply_on_the_other_process_at_once(two_webs, acme,
                                                                           alice, api_key):
    from core.access_tokens import issue_personal_token

    first, second = two_webs
    _rule_policy(acme, "allow", "refunds allowed")
    # a key per phase: each stays under the RATE/min limit
    key = api_key(acme, ["ingest", "view_ledger"])
    # both processes have the first version compiled (and its row kept)
    for url in two_webs:
        for n in range(4):  # two workers each: the kernel picks which one answers
            assert _decide(url, key, f"warm-{url[-5:]}-{n}")["effect"] == "allow"
    key = api_key(acme, ["ingest", "view_ledger"])

    newer = _rule_policy(acme, "deny", "refunds refused during an outage", outage="only")
    for url in two_webs:
        for n in range(4):
            decided = _decide(url, key, f"after-{url[-5:]}-{n}")
            assert decided["policy"]["version"] == newer.number, decided
            assert decided["effect"] == "allow", decided  # no outage yet

    _, token = issue_personal_token(alice, "outage", ["manage_policies", "view_ledger"])
    switched = send(first, "POST", f"/api/v1/tenants/{acme.slug}/outage/", token=token,
                    body={"outage_mode": True, "reason": "incident 42"})
    assert switched.status == 200, switched.body[:300]
    key = api_key(acme, ["ingest", "view_ledger"])
    for n in range(4):
        decided = _decide(second, key, f"outage-{n}")
        assert decided["effect"] == "deny", decided
