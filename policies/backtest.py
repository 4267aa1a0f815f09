"""Back-testing: which recorded tool calls a draft would decide differently from the policies
published now, counted by tool and effect, with every changed call kept.

Both sides read each call's arguments as the person who asked may see them (strict
redaction): deciding on the stored values would let someone who governs but may not see a
secret test guesses of it with a draft rule ("does args.token start with sk_live_A?").

"Before" is what the tenant's published policies decide; "after" is what they would decide
with the draft published: the draft in place of its own policy's published version, beside
every other published policy (a freeze, a guard policy), strictest effect winning as live."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from core.actors import Actor, person_of
from core.db_routing import stale_ok_job
from core.jobs import enqueue_on_commit
from core.roles import Role
from core.tenancy import has_role
from core.watchdog import beat, claim_stalled, waiting_in_outbox
from runs.models import ToolCall
from runs.redaction import marker_texts
from runs.services import redactor_for

from .engine import compile_rules, input_document
from .models import BackTest, BackTestChange, BackTestStatus, PolicyVersion
from .services import PolicyError, current_deciders, evaluate

CHUNK = 2000
HEARTBEAT_SECONDS = 10
MAX_NARROWING = 200  # agents or tools named in one back-test


def start_backtest(version: PolicyVersion, window_from: datetime, window_to: datetime, *,
                   by: Actor, agents: Sequence[str] = (), tools: Sequence[str] = ()
                   ) -> BackTest:
    """Queue a back-test (a Celery task) of ``version`` over the tool calls that started in
    the window, only those of ``agents`` and ``tools`` when given."""
    from .tasks import run_backtest

    if not has_role(by, Role.MANAGE_POLICIES, version.tenant_id):
        raise PermissionDenied("back-testing a policy version needs the manage_policies role "
                               "on its tenant")
    if window_from >= window_to:
        raise PolicyError("the window must end after it starts")
    if window_from > timezone.now():
        raise PolicyError("the window starts in the future: no call has been recorded there")
    agents, tools = _names(agents, "agents"), _names(tools, "tools")
    with transaction.atomic():
        test = BackTest.objects.create(tenant_id=version.tenant_id, version=version,
                                       window_from=window_from, window_to=window_to,
                                       agents=agents, tools=tools, requested_by=person_of(by))
        enqueue_on_commit(run_backtest, (test.pk,))
    return test


def _names(given: Sequence[str], what: str) -> list[str]:
    names = sorted({str(name).strip() for name in given if str(name).strip()})
    if len(names) > MAX_NARROWING:
        raise PolicyError(f"at most {MAX_NARROWING} {what} in one back-test")
    return names


def run(test_id: int) -> BackTest | None:
    """Claim a queued back-test and run it (None: another worker has it)."""
    claimed = BackTest.objects.filter(pk=test_id, status=BackTestStatus.QUEUED).update(
        status=BackTestStatus.RUNNING, heartbeat_at=timezone.now())
    if not claimed:
        return None
    test = BackTest.objects.select_related("version", "tenant").get(pk=test_id)
    try:
        # its stream of recorded calls may come from the read replica, once that holds
        # everything committed before now (the draft's rules, the window's calls)
        stale_ok_job(lambda _alias: _run(test))
    except Exception as exc:  # recorded on the row, for the person waiting on it
        BackTest.objects.filter(pk=test.pk, status=BackTestStatus.RUNNING).update(
            status=BackTestStatus.FAILED, error=f"{type(exc).__name__}: {exc}",
            finished_at=timezone.now())
        raise
    return test


def _run(test: BackTest) -> None:
    version, tenant = test.version, test.tenant
    draft = compile_rules(version.default_effect,
                          [{"id": r.pk, **r.as_dict()} for r in version.rules.all()])
    calls = ToolCall.objects.filter(tenant=tenant, started_at__gte=test.window_from,
                                    started_at__lt=test.window_to)
    if test.agents:
        calls = calls.filter(run__agent__agent_id__in=test.agents)
    if test.tools:
        calls = calls.filter(tool__name__in=test.tools)
    rows = calls.order_by("id").values_list("call_id", "run__run_id", "run__agent__agent_id",
                                            "tool__name", "action_class", "input",
                                            "classifications")
    redactor = redactor_for(None, tenant.pk).redactor
    published = current_deciders(tenant)  # "before": what is published now, loaded once
    with_draft = [d for d in published if d[0].policy_id != version.policy_id]
    with_draft.append((version, draft.decide))
    total = calls.count()
    beat(BackTest, test.pk, total=total)
    counts: dict[str, dict[str, Any]] = {}
    changes: list[BackTestChange] = []
    processed = changed = redacted = 0
    last_beat = time.monotonic()
    BackTestChange.objects.filter(backtest=test).delete()  # a run the watchdog queued again
    for call_id, run_id, agent_id, tool, action_class, stored, labels in rows.iterator(
            chunk_size=CHUNK):
        args = marker_texts(redactor.redact(stored, "input", labels))
        redacted += args != stored
        doc = input_document(tenant_slug=tenant.slug, outage_mode=tenant.outage_mode,
                             agent_id=agent_id, run_id=run_id, call_id=call_id, tool=tool,
                             action_class=action_class, mode="live",
                             args=args if isinstance(args, dict) else {})
        before = evaluate(tenant, doc, published)[0].effect
        after = evaluate(tenant, doc, with_draft)[0]
        processed += 1
        _count(counts.setdefault(tool, {"calls": 0, "before": {}, "after": {}, "changed": 0}),
               before, after.effect)
        if after.effect != before:
            changed += 1
            changes.append(BackTestChange(
                tenant_id=test.tenant_id, backtest=test, call_id=call_id, run_id=run_id,
                tool=tool, before=before, after=after.effect,
                rules=[m["name"] for m in after.matched if m.get("policy") == version.policy.name]))
        if len(changes) >= CHUNK:
            BackTestChange.objects.bulk_create(changes)
            changes = []
        # by count and by time: a policy asking OPA may take a while per call
        if processed % CHUNK == 0 or time.monotonic() - last_beat > HEARTBEAT_SECONDS:
            beat(BackTest, test.pk, processed=processed, changed=changed)
            last_beat = time.monotonic()
    BackTestChange.objects.bulk_create(changes)
    BackTest.objects.filter(pk=test.pk, status=BackTestStatus.RUNNING).update(
        status=BackTestStatus.DONE, processed=processed, changed=changed, counts=counts,
        redacted_calls=redacted, finished_at=timezone.now())


def _count(row: dict[str, Any], before: str, after: str) -> None:
    row["calls"] += 1
    row["before"][before] = row["before"].get(before, 0) + 1
    row["after"][after] = row["after"].get(after, 0) + 1
    row["changed"] += before != after


def fail_stalled_backtests(now: datetime | None = None) -> dict[str, int]:
    """Watchdog body: a running back-test whose worker stopped is failed with the reason (it
    cannot pick up where it stopped; its author starts another); a queued one whose message
    was lost is queued again."""
    from .tasks import run_backtest

    active = BackTest.objects.filter(status__in=[BackTestStatus.QUEUED, BackTestStatus.RUNNING])
    requeued = failed = 0
    for stall in claim_stalled(active, now, lambda pk, status: waiting_in_outbox(
            run_backtest.name, pk)):
        test = BackTest.objects.get(pk=stall.pk)
        if stall.status == BackTestStatus.RUNNING:
            failed += BackTest.objects.filter(pk=test.pk, status=BackTestStatus.RUNNING).update(
                status=BackTestStatus.FAILED, finished_at=timezone.now(),
                error=stall.reason(f"stopped after {test.processed} of {test.total} calls"))
        else:
            with transaction.atomic():
                enqueue_on_commit(run_backtest, (test.pk,))
            requeued += 1
    return {"requeued": requeued, "failed": failed}
