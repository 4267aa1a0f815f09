"""Every presenter redacts, and none shows a hash of what it hides.

The walk plants secrets through every way content enters (batch ingestion, a decision's
arguments and the approval requests they raise, an incident's title, summary and tickets, a
sandbox replay whose tool answers a secret, a compensate hook that answers one) and reads
every face back as a strict reader. The faces are enumerated from the code: every URL route
(Django's resolver) and every ``ledger`` command (its parser); the admin's classes are walked
in ``tests/core/test_every_admin_page_redacts.py``. A route or command the walk does
not know fails here, so a new one is covered the day it is added.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core import mail
from django.urls import URLPattern, URLResolver, get_resolver

from core.signing import public_key_b64
from ledger_portal.cli import build_parser, main
from runs.models import Annotation, ModelCall, Run, Step, Tool, ToolCall
from runs.otlp.assembly import run_id_for
from tests.exports.conftest import WINDOW, export_dirs, export_now  # noqa: F401 (fixtures)
from tests.otlp.spans import new_trace_id, otlp_json, sid, span
from tests.replay.scenario import recorded_run, same_as_recorded, stored_run, walk, wire_tools
from tests.rollback.conftest import compensating, eager, refunds, tool_server  # noqa: F401
from tests.runs.redaction_corpus import PLANTED, SECRETS, planted_run

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager")]

RUN_ID = "walk-leak-run"
REPLAYED = "walk-replayed-run"
REPLAY_SECRET = "sk_live_ClxyGS0UdCyLPFhg1R6FylBSlO"
HOOK_CARD = "4111 1111 1111 1111"
TRIGGER_SECRET = "sk_live_Tr1gg3rS3cr3tV4lu3xyz12"  # ids are content too
IDEMPOTENCY_SECRET = "ghp_1dempotencyK3yS3cr3tV4lu3abcdefghij"
LEAKS = [*PLANTED, REPLAY_SECRET, HOOK_CARD, TRIGGER_SECRET, IDEMPOTENCY_SECRET]

# Routes that present nothing on GET (405; the OTLP endpoint, which takes only API keys, 401):
# what they do is a write, tested with its service. One that starts answering GET fails.
WRITE_ONLY = {
    "approval-decide", "run-rollback", "run-annotate", "incident-act", "export-share",
    "api:batch-ingest", "api:run-annotations", "api:incident-link", "api:incident-note",
    "api:incident-freeze", "api:incident-mitigate", "api:incident-close",
    "api:decision-create", "api:approval-withdraw", "api:approval-decision", "otlp-traces",
    "otlp-logs",
    "replay-step-follow-up", "api:deferred-dismiss", "api:deferred-apply",
    "run-replay", "api:backtest-start", "api:exception-grant", "api:exception-revoke",
    "sign-out",
}
# Single sign-on's pages: a 404 unless OIDC_ISSUER is set (tests/core/test_sso.py signs in).
OFF_BY_DEFAULT = {"oidc_authentication_init", "oidc_authentication_callback"}
# A replay that diverged exits 4 (as `ledger verify` on tampering), for scripts to see.
# A rollback asked inside the test's transaction is queued until a commit that never comes, so
# its --wait ends with it unfinished: 5.
# The walk acts as alice, who asked for the exception: granting it is refused (four-eyes), 3.
EXPECTED_EXIT = {"replay": (0, 4), "rollback": (0, 5), "exceptions grant": (3,)}
# Query strings a page needs to show anything beyond its empty form.
QUERIES = {"find-run": {"q": "billing-agent"}, "api:decision-list": {"run_id": RUN_ID},
           # the calls of the planted run's step (a long run's page links to them)
           "run-step-calls": {"step": "s1"}}


@pytest.fixture
def world(acme, alice, record, tool_server, compensating, refunds, key_client,  # noqa: F811
          export_now, django_capture_on_commit_callbacks,  # noqa: F811
          settings) -> dict[str, list[Any]]:
    """Secrets planted through every way in (the batch API, OTLP/JSON, the annotation API, the
    decision API's arguments, an incident, a replayed tool's answer, a compensate hook's answer);
    the sample value of each route parameter."""
    settings.LEDGER_SECURITY_CONTACTS = ["security@acme.test"]  # escalations are e-mailed
    settings.LEDGER_METRICS_ALLOW = ["127.0.0.1/32"]  # /metrics is read back like the rest
    from approvals.models import ApprovalRequest
    from incidents.services import link_to_incident, open_incident
    from operations.replay import start_replay

    run = planted_run(RUN_ID, model_calls=5)
    run["steps"][0]["title"] = f"Investigate with {SECRETS[1].value}"
    run["trigger_ref"] = f"alert:{TRIGGER_SECRET}"
    run["agent_id"] = "billing-agent"  # the replayed run's too: finding it lists both
    run["tool_calls"][0]["idempotency_key"] = f"idem:{IDEMPOTENCY_SECRET}"
    run["annotations"] = [{"annotation_id": "a1", "kind": "note",
                           "body": f"the key was {SECRETS[2].value}",
                           "data": {"found": SECRETS[3].value}}]
    ingest = key_client(acme, ["ingest", "operate", "view_ledger"])
    answer = ingest.post("/api/v1/batches/", {"runs": [run]}, format="json")
    assert answer.status_code in (200, 201), answer.content
    trace_id, spans = otlp_trace_with_secrets()
    answer = ingest.post("/v1/traces", otlp_json(*spans), content_type="application/json")
    assert answer.status_code == 200, answer.content
    deferred = deferred_with_secrets(acme, alice, ingest)
    answer = ingest.post(f"/api/v1/runs/{RUN_ID}/annotations/",
                         {"body": f"rotated {SECRETS[9].value}", "kind": "note",
                          "data": {"old": SECRETS[10].value}}, format="json")
    assert answer.status_code == 201, answer.content
    for n, arguments in enumerate(({"token": SECRETS[4].value}, {SECRETS[5].value: "k"})):
        answer = ingest.post("/api/v1/decisions/", {
            "tool": "refund_payment", "action_class": "write", "arguments": arguments,
            "run_id": RUN_ID, "call_id": f"asked-{n}", "agent_id": "billing-agent"},
            format="json")
        assert answer.status_code == 201, answer.content
    incident = open_incident(acme, f"Leaked {SECRETS[6].value}", by=alice,
                             summary=f"found {SECRETS[7].value}",
                             ticket_ids=[SECRETS[8].value])
    link_to_incident(incident, by=alice, run_ids=[RUN_ID, "run-refunds"])  # writes: escalated
    record(acme, recorded_run(REPLAYED))
    wire_tools(acme, tool_server, refund_payment={"endpoint": tool_server.route(
        "/refund-secret", same_as_recorded("c2", state=REPLAY_SECRET))})
    replay = walk(start_replay(stored_run(acme, REPLAYED), by=alice))
    compensating(Tool.objects.get(tenant=acme, name="refund_payment"),
                 (200, {"refund_reversed": True, "card": HOOK_CARD,  # the timeline shows what
                        "remaining_side_effects": [f"a fee on card {HOOK_CARD}"]}))  # remains
    with django_capture_on_commit_callbacks(execute=True):
        answer = key_client(acme, ["view_ledger", "operate"]).post(
            "/api/v1/rollbacks/", {"call_id": "run-refunds-c2"}, format="json")
    assert answer.status_code == 202, answer.content
    export = export_now(acme, alice, window=WINDOW)
    version, backtest, exception = governed(acme, alice)
    return {
        "version_id": [version.pk], "backtest_id": [backtest.pk],
        "exception_id": [exception.pk],
        "tenant": ["acme"], "slug": ["acme"],
        "run_id": [RUN_ID, REPLAYED, "run-refunds", run_id_for(trace_id),
                   "walk-deferred-run"],
        "replay_id": [replay.pk], "seq": [replay.steps.order_by("seq").first().seq],
        "export_id": [export.pk], "incident_id": [incident.pk],
        "agent_id": [run["agent_id"]],
        "call_id": [c["call_id"] for c in run["tool_calls"][:3]] + ["run-refunds-c2"],
        "rollback_id": [answer.json()["rollbacks"][0]["id"]],
        "approval": list(ApprovalRequest.objects.values_list("pk", flat=True)),
        "incident": [incident.pk],
        "deferred_id": deferred,
    }


def deferred_with_secrets(acme: Any, alice: Any, ingest: Any) -> list[int]:
    """What a newer agent sends that the portal keeps back (a lenient tenant): secrets in an
    unknown field, in a field's name, in a record held whole for an unknown value, and in a
    justification of a dismissal."""
    from runs.deferred import dismiss_deferred
    from runs.models import DeferredItem

    acme.batch_unknown_fields = "lenient"
    acme.save()
    run = planted_run("walk-deferred-run", model_calls=1)
    run["tool_calls"][0]["reasoning"] = {"note": f"used {SECRETS[16].value}"}
    run["tool_calls"][0][f"x_{SECRETS[17].value}"] = 1
    run["tool_calls"][1]["action_class"] = "impersonate"
    run["tool_calls"][1]["input"] = {"token": SECRETS[18].value}
    answer = ingest.post("/api/v1/batches/", {"runs": [run]}, format="json")
    assert answer.status_code == 201, answer.content
    acme.batch_unknown_fields = "strict"
    acme.save()
    items = list(DeferredItem.objects.filter(tenant=acme).order_by("id"))
    assert len(items) >= 2
    dismiss_deferred(items[0], by=alice, justification=f"matches {SECRETS[19].value}")
    return [item.pk for item in DeferredItem.objects.filter(tenant=acme).order_by("id")]


def governed(acme: Any, alice: Any) -> tuple[Any, Any, Any]:
    """A published policy, a back-test of a draft over the planted runs, and a governed
    exception whose justification quotes a secret."""
    from django.contrib.auth.models import User
    from django.utils import timezone

    from core.services import grant_role
    from policies.backtest import start_backtest
    from policies.exceptions import request_exception
    from policies.models import Policy, Rule
    from policies.services import create_draft, publish_policy_version
    from policies.tasks import run_backtest
    from runs.governance_log import setting_up

    with setting_up():
        second = User.objects.create_user("walk-publisher")
        grant_role(second, "manage_policies", acme)
    policy = Policy.objects.create(tenant=acme, name="walk-policy")
    published = publish_policy_version(create_draft(policy, by=alice, change_note="first"),
                                       by=second)
    draft = create_draft(policy, by=alice, change_note="deny all")
    Rule.objects.create(tenant=acme, version=draft, name="deny all", effect="deny")
    backtest = start_backtest(draft, *WINDOW, by=alice)
    run_backtest.apply(args=(backtest.pk,))
    exception = request_exception(acme, by=alice, tool="refund_payment",
                                  policy_version=published, starts_at=timezone.now(),
                                  ends_at=timezone.now() + timedelta(hours=1),
                                  justification=f"case of {SECRETS[15].value}")
    return published, backtest, exception


def otlp_trace_with_secrets() -> tuple[str, list[Any]]:
    """A GenAI agent trace (OTLP/JSON) carrying secrets in a prompt, a tool's arguments and
    result, and an exception message."""
    trace_id = new_trace_id()
    root = span(trace_id, "invoke_agent walk-agent", {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.id": "walk-otlp-agent",
        "gen_ai.agent.name": "walk", "gen_ai.conversation.id": "walk-conv"},
        start_ms=0, end_ms=900)
    chat = span(trace_id, "chat gpt-4.1", {
        "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4.1",
        "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
            {"type": "text", "content": f"use {SECRETS[11].value}"}]}])},
        parent=sid(root), start_ms=10, end_ms=300)
    tool = span(trace_id, "execute_tool lookup", {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup",
        "gen_ai.tool.call.arguments": json.dumps({"key": SECRETS[12].value}),
        "gen_ai.tool.call.result": json.dumps({"found": SECRETS[13].value})},
        parent=sid(root), start_ms=320, end_ms=400,
        events=[("exception", {"exception.type": "AuthError",
                               "exception.message": f"bad token {SECRETS[14].value}"})],
        error=f"failed with {SECRETS[14].value}")
    unmapped = span(trace_id, "query orders", {  # no ledger record fits it: deferred
        "db.system": "postgresql", "db.statement": f"-- key {SECRETS[20].value}"},
        parent=sid(root), start_ms=410, end_ms=420)
    return trace_id, [chat, tool, unmapped, root]


def _routes(patterns: Any = None, prefix: str = "", namespace: str = ""
            ) -> Iterator[tuple[str, str, list[str]]]:
    """Every route outside the admin: (name, path template, parameter names)."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            if pattern.app_name == "admin":
                continue
            space = f"{pattern.namespace}:" if pattern.namespace else namespace
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern), space)
        elif isinstance(pattern, URLPattern):
            yield (f"{namespace}{pattern.name}", prefix + str(pattern.pattern),
                   list(pattern.pattern.converters))


def _samples(name: str, param: str, world: dict[str, list[Any]]) -> list[Any]:
    if param == "pk":  # the same converter name means an approval or an incident
        return world["approval" if name.startswith("approval") or "approval" in name
                     else "incident"]
    if param not in world:
        raise AssertionError(f"the walk has no sample for <{param}> of route {name!r}: add "
                             "one to the world fixture, so the new route is read back")
    return world[param]


def _urls(name: str, template: str, params: list[str], world: dict[str, list[Any]]
          ) -> list[str]:
    urls = [template]
    for param in params:
        urls = [url.replace(_placeholder(template, param), str(value))
                for url in urls for value in _samples(name, param, world)]
    return ["/" + url.lstrip("^").rstrip("$") for url in urls]


def _placeholder(template: str, param: str) -> str:
    start = template.index(f":{param}>")
    return template[template.rindex("<", 0, start):start + len(param) + 2]


def _hashes() -> set[str]:
    found: set[str] = set()
    for run in Run.objects.all():
        found |= {run.head_hash, run.content_hash, run.chain_hash}
    for model in (Step, ModelCall, ToolCall, Annotation):
        for pair in model.objects.values_list("content_hash", "chain_hash"):
            found |= set(pair)
    return found | {h[:16] for h in found}


def _leaks(text: str, hashes: set[str]) -> list[str]:
    return [value for value in LEAKS if value in text] + sorted(h for h in hashes if h in text)


@pytest.fixture(autouse=True)
def _every_log_record(caplog):
    """Everything logged while secrets are planted and read back: it must hold none."""
    caplog.set_level(logging.DEBUG)
    yield
    assert [value for value in LEAKS if value in caplog.text] == []


def test_every_route_presents_only_redacted_content(world, alice, client):
    from core.workers import record_heartbeat

    record_heartbeat("celery@walk")  # a worker is alive, so /readyz answers 200 and is read
    client.force_login(alice)
    hashes = _hashes()
    read, leaked, unexpected = 0, {}, {}
    for name, template, params in _routes():
        for url in _urls(name, template, params, world):
            answer = client.get(url, QUERIES.get(name, {}), follow=True)
            if name in OFF_BY_DEFAULT:
                if answer.status_code != 404:
                    unexpected[url] = f"{answer.status_code}, single sign-on is off"
                continue
            if name in WRITE_ONLY:
                if answer.status_code not in (401, 405):
                    unexpected[url] = f"{answer.status_code}, listed as write-only"
                continue
            if answer.status_code != 200:
                unexpected[url] = answer.status_code
                continue
            body = b"".join(answer.streaming_content) if answer.streaming else answer.content
            text = body.decode("utf-8", "replace")
            read += 1
            if _leaks(text, hashes):
                leaked[url] = _leaks(text, hashes)[:3]
    notices = [f"{m.subject}\n{m.body}" for m in mail.outbox]  # escalations sent meanwhile
    leaked.update({f"mail {i}": _leaks(text, hashes) for i, text in enumerate(notices)
                   if _leaks(text, hashes)})
    print(f"walked {read} pages and {len(notices)} e-mails for {len(LEAKS)} planted values "
          f"and {len(hashes)} hashes: {len(leaked)} leaked")
    assert unexpected == {}
    assert leaked == {}
    assert read >= 30
    assert notices


def _commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = list(_commands(sub, f"{prefix}{name} "))
                yield from nested or [f"{prefix}{name}"]


def _cli_walk(world: dict[str, list[Any]], tmp: Path) -> dict[str, list[list[str]]]:
    """How the walk reads each command back. Every command is here: the ones that write get
    an invocation whose answer is checked too (it may echo what it wrote)."""
    incident, replay = str(world["incident_id"][0]), str(world["replay_id"][0])
    version, backtest = str(world["version_id"][0]), str(world["backtest_id"][0])
    exception = str(world["exception_id"][0])
    approvals = [str(pk) for pk in world["approval"]]
    shows = [["show", run_id, *extra] for run_id in world["run_id"]
             for extra in ([], ["--json"], ["--full"])]
    return {
        "runs": [["runs"], ["runs", "--json"]],
        "approvals list": [["approvals", "list"], ["approvals", "list", "--all", "--json"]],
        "approvals show": [["approvals", "show", pk, *extra] for pk in approvals
                           for extra in ([], ["--json"])],
        "approvals approve": [["approvals", "approve", approvals[0], "-j", "walked"]],
        "approvals reject": [["approvals", "reject", approvals[-1], "-j", "walked"]],
        "show": shows,
        "find": [["find", RUN_ID], ["find", "billing-agent"]],
        "verify": [["verify", "--tenant", "acme", "--quiet"]],
        "freeze": [["freeze", "lookup_customer", "--tenant", "acme"]],
        "outage": [["outage", "--tenant", "acme"]],
        "export": [["export", "--tenant", "acme", "--from", "2000-01-01T00:00:00Z", "--to",
                    "2100-01-01T00:00:00Z", "-o", str(tmp / "walk.tar")]],
        "verify-export": [["verify-export", str(tmp / "walk.tar"), "--public-key",
                           public_key_b64()]],
        "incident open": [["incident", "open", "--tenant", "acme", "--title", "walk"]],
        "incident link": [["incident", "link", incident, "--run", REPLAYED]],
        "incident freeze": [["incident", "freeze", incident, "send_email"]],
        "incident show": [["incident", "show", incident], ["incident", "show", incident,
                                                           "--json"]],
        "incident close": [["incident", "close", incident, "--remediation", "remediated",
                            "--note", "walked"]],
        "annotate": [["annotate", RUN_ID, "--body", "walked", "--json"]],
        "replay": [["replay", "--show", replay], ["replay", "--show", replay, "--json"],
                   ["replay", "--divergences", "--tenant", "acme"],
                   ["replay", "--run-id", REPLAYED, "--tenant", "acme", "--inline",
                    "--quiet"]],
        "retention": [["retention", "--tenant", "acme", "--dry-run"]],
        "hold": [["hold", "--tenant", "acme", "--run-id", RUN_ID, "--reason", "walk"]],
        # Its answer is the key itself: what view_unredacted holders are given, recorded.
        "commitment-key": [["commitment-key", "--tenant", "acme", "--rotate"]],
        "rollback": [["rollback", "--call-id", "run-refunds-c3", "--wait", "5"]],
        "versions": [["versions"], ["versions", "--json"]],
        "backtest show": [["backtest", "show", backtest], ["backtest", "show", backtest,
                                                          "--json"]],
        "backtest start": [["backtest", "start", version, "--from", "2000-01-01", "--to",
                            "2100-01-01", "--json"]],
        "exceptions list": [["exceptions", "list"], ["exceptions", "list", "--json"]],
        "exceptions request": [["exceptions", "request", "--version", version, "--tool",
                                "refund_payment", "-j", "walked"]],
        "exceptions grant": [["exceptions", "grant", exception]],
        "exceptions revoke": [["exceptions", "revoke", exception]],
        "reconcile": [["reconcile"], ["reconcile", "--status", "all", "--json"],
                      ["reconcile", "--apply", "--tenant", "acme"],
                      ["reconcile", "--dismiss", str(world["deferred_id"][-1]), "-j", "walked"],
                      ["reconcile", "--list", "--status", "all"]],
    }


def test_every_ledger_command_presents_only_redacted_content(world, alice, capsys, tmp_path):
    walk_plan = _cli_walk(world, tmp_path)
    assert sorted(_commands(build_parser())) == sorted(walk_plan), (
        "a ledger command the walk does not read back: add it to _cli_walk")
    hashes = _hashes()
    leaked, failed = {}, {}
    for command, invocations in walk_plan.items():
        for argv in invocations:
            code = main(["--as", "alice", *argv])
            out, err = capsys.readouterr()
            if code not in EXPECTED_EXIT.get(command, (0,)):
                failed[" ".join(argv)] = (code, err[-300:])
            if _leaks(out + err, hashes):
                leaked[" ".join(argv)] = _leaks(out + err, hashes)[:3]
    print(f"ran {sum(map(len, walk_plan.values()))} invocations of {len(walk_plan)} commands "
          f"for {len(LEAKS)} planted values and {len(hashes)} hashes: {len(leaked)} leaked")
    assert failed == {}
    assert leaked == {}
