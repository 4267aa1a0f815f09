"""Back-test of a draft over 1,000,000 recorded tool calls: calls/s, beside two baselines.

    .venv/bin/python -m bench.backtest --reuse-db ledger_bench_admin [--decide-limit 100000]
                                       [--profile-calls 50000] [--skip stream,decide,profile]

Figure (no numeric target): ``policies.backtest.run(test.pk)`` called in process on a
``BackTest`` row (status queued) whose window covers every tool call of the tenant; calls/s =
``test.processed`` / wall seconds, with ``test.changed``.

Setup (idempotent): per tenant, policy ``tools`` gets a 20-rule version published by
``bench-bt-publisher`` (written by ``bench-bt-author``, both holding ``manage_policies``) unless
a published version exists already (then it is reused); a draft (change note ``DRAFT_NOTE``)
is made from it with a few rules changed, or reused if a draft with that note exists. The
published versions stay (they are immutable); the BackTest rows made here are deleted at the
end unless ``--keep-tests``.

Baselines, same run, same tenants:

(a) **stream only**: the queryset ``_run`` builds (same filter, order and ``values_list``),
    ``.iterator(chunk_size=2000)``, rows counted, nothing decided: the fetch floor.
(b) **decide only**: the first ``--decide-limit`` rows of each tenant fetched and turned into
    input documents beforehand (that build is timed apart), then ``evaluate`` against the
    published deciders + ``draft.decide`` per document, the draft compiled once, in memory:
    the deciding ceiling. Also split: published alone, draft alone.

``--profile-calls N`` cProfiles ``run`` on a BackTest whose window covers the first N calls of
the first tenant (top 20 by tottime).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
from datetime import timedelta
from typing import Any

from bench._common import (
    add_db_arguments,
    bench_database,
    environment_line,
    profile_call,
    record_figure,
    table,
)

POLICY = "tools"
DRAFT_NOTE = "bench.backtest: deny data-exporter exfil, approval for refunds > 200 EUR, " \
    "deletes > 10,000 rows, drop post_comment allow"
AUTHOR, PUBLISHER = "bench-bt-author", "bench-bt-publisher"
CHUNK = 2000

# The published version: 20 rules over bench.generate's tools (default: require_approval).
PUBLISHED_RULES: list[dict[str, Any]] = [
    {"name": "reads are fine", "action_classes": ["read"], "effect": "allow"},
    {"name": "ticket updates", "tool": "update_ticket", "effect": "allow"},
    {"name": "comments", "tool": "post_comment", "effect": "allow"},
    {"name": "pull requests by the reviewer", "tool": "create_pull_request",
     "agents": ["code-reviewer"], "effect": "allow"},
    {"name": "small refunds", "tool": "refund_*", "effect": "allow",
     "condition": "has(args.amount_cents) && args.amount_cents <= 40000"},
    {"name": "large refunds need approval", "tool": "refund_*", "effect": "require_approval",
     "condition": "has(args.amount_cents) && args.amount_cents > 40000"},
    {"name": "refunds in odd currencies", "tool": "refund_*", "effect": "deny",
     "condition": "has(args.currency) && !(args.currency in ['EUR', 'USD', 'GBP'])"},
    {"name": "mail to our customers", "tool": "send_email", "effect": "allow",
     "condition": "has(args.customer) && args.customer.email.endsWith('@example.com')"},
    {"name": "mail elsewhere needs approval", "tool": "send_*", "effect": "require_approval",
     "condition": "!has(args.customer) || !args.customer.email.endsWith('@example.com')"},
    {"name": "reports to the EU bucket", "tool": "upload_report", "effect": "allow",
     "condition": "has(args.bucket) && args.bucket.startsWith('s3://reports-eu/')"},
    {"name": "uploads elsewhere", "tool": "upload_*", "effect": "deny",
     "condition": "!has(args.bucket) || !args.bucket.startsWith('s3://reports-eu/')"},
    {"name": "deletes by known agents", "tool": "delete_*",
     "agents": ["data-exporter", "billing-reconciler"], "effect": "allow"},
    {"name": "mass deletes need approval", "tool": "delete_*", "effect": "require_approval",
     "condition": "has(args.rows) && args.rows > 40000"},
    {"name": "no deletes in replay", "action_classes": ["delete"], "modes": ["replay"],
     "effect": "deny"},
    {"name": "restarts", "tool": "restart_service", "agents": ["infra-oncall"],
     "effect": "allow"},
    {"name": "scaling", "tool": "scale_*", "effect": "allow"},
    {"name": "scaling during an outage", "tool": "scale_*", "outage": "only",
     "effect": "require_approval"},
    {"name": "writes during an outage", "action_classes": ["write"], "outage": "only",
     "effect": "sandbox_only"},
    {"name": "sandbox writes", "action_classes": ["write", "delete"], "modes": ["sandbox"],
     "effect": "sandbox_only"},
    {"name": "unknown agents", "agents": ["intern-bot", "legacy-crawler"], "effect": "deny"},
]


def _draft_changes(draft: Any) -> None:
    """What the draft changes: a new deny, two thresholds tightened, one allow dropped."""
    from policies.models import Rule

    rules = {r.name: r for r in draft.rules.all()}
    small = rules["small refunds"]
    small.condition = "has(args.amount_cents) && args.amount_cents <= 20000"
    small.save()
    large = rules["large refunds need approval"]
    large.condition = "has(args.amount_cents) && args.amount_cents > 20000"
    large.save()
    mass = rules["mass deletes need approval"]
    mass.condition = "has(args.rows) && args.rows > 10000"
    mass.save()
    rules["comments"].delete()
    Rule.objects.create(tenant=draft.tenant, version=draft, position=len(PUBLISHED_RULES),
                        name="no exfil by the exporter", tool="*", action_classes=["exfil"],
                        agents=["data-exporter"], effect="deny")


# -- setup -------------------------------------------------------------------------------------


def _users() -> tuple[Any, Any]:
    from django.contrib.auth.models import User

    author, _ = User.objects.get_or_create(username=AUTHOR, defaults={"is_staff": True})
    publisher, _ = User.objects.get_or_create(username=PUBLISHER, defaults={"is_staff": True})
    return author, publisher


def ensure_policies(tenant: Any, author: Any, publisher: Any) -> tuple[Any, Any, str]:
    """(published version, draft, what was done) for ``tenant``."""
    from core.services import grant_role
    from policies.models import Policy, PolicyVersion, Rule, VersionStatus
    from policies.services import create_draft, publish_policy_version

    for user in (author, publisher):
        grant_role(user, "manage_policies", tenant)
    policy, _ = Policy.objects.get_or_create(tenant=tenant, name=POLICY)
    done = []
    published = policy.versions.filter(status=VersionStatus.PUBLISHED).first()
    if published is None:
        first = create_draft(policy, by=author,
                             change_note=f"bench.backtest: {len(PUBLISHED_RULES)} rules")
        first.rules.all().delete()
        first.default_effect = "require_approval"
        first.save()
        Rule.objects.bulk_create([Rule(tenant=tenant, version=first, position=i, **r)
                                  for i, r in enumerate(PUBLISHED_RULES)])
        published = publish_policy_version(first, by=publisher)
        done.append(f"published v{published.number}")
    else:
        done.append(f"reused published v{published.number}")
    draft = (PolicyVersion.objects.filter(policy=policy, status=VersionStatus.DRAFT,
                                          change_note=DRAFT_NOTE).order_by("-number").first())
    if draft is None:
        draft = create_draft(policy, by=author, change_note=DRAFT_NOTE, copy_from=published)
        _draft_changes(draft)
        done.append(f"drafted v{draft.number}")
    else:
        done.append(f"reused draft v{draft.number}")
    return published, draft, ", ".join(done)


def window_of(tenant: Any, limit: int | None = None) -> tuple[Any, Any, int]:
    """A window covering the tenant's tool calls (``limit``: about the first ``limit`` by id)."""
    from django.db.models import Count, Max, Min

    from runs.models import ToolCall

    qs = ToolCall.objects.filter(tenant=tenant)
    if limit is None:
        agg = qs.aggregate(lo=Min("started_at"), hi=Max("started_at"), n=Count("id"))
        return agg["lo"], agg["hi"] + timedelta(microseconds=1), agg["n"]
    lo = qs.aggregate(lo=Min("started_at"))["lo"]
    hi = qs.order_by("started_at").values_list("started_at", flat=True)[limit]
    return lo, hi, qs.filter(started_at__gte=lo, started_at__lt=hi).count()


def calls_qs(tenant: Any, lo: Any, hi: Any) -> Any:
    """The queryset ``policies.backtest._run`` streams (kept in step with it by hand)."""
    from runs.models import ToolCall

    return (ToolCall.objects.filter(tenant=tenant, started_at__gte=lo, started_at__lt=hi)
            .order_by("id").values_list("call_id", "run__run_id", "run__agent__agent_id",
                                        "tool__name", "action_class", "input"))


def doc_of(tenant: Any, row: tuple[Any, ...]) -> dict[str, Any]:
    from policies.engine import input_document

    call_id, run_id, agent_id, tool, action_class, args = row
    return input_document(tenant_slug=tenant.slug, outage_mode=tenant.outage_mode,
                          agent_id=agent_id, run_id=run_id, call_id=call_id, tool=tool,
                          action_class=action_class, mode="live",
                          args=args if isinstance(args, dict) else {})


def new_test(draft: Any, lo: Any, hi: Any, made: list[int]) -> Any:
    from policies.models import BackTest

    test = BackTest.objects.create(tenant_id=draft.tenant_id, version=draft, window_from=lo,
                                   window_to=hi)
    made.append(test.pk)
    return test


# -- passes ------------------------------------------------------------------------------------


def pass_backtest(tenant: Any, draft: Any, lo: Any, hi: Any, made: list[int]) -> dict[str, Any]:
    from policies.backtest import run
    from policies.models import BackTest, BackTestStatus

    test = new_test(draft, lo, hi, made)
    started = time.perf_counter()
    assert run(test.pk) is not None
    seconds = time.perf_counter() - started
    test = BackTest.objects.get(pk=test.pk)
    assert test.status == BackTestStatus.DONE, test.error
    assert test.processed == test.total
    return {"seconds": seconds, "processed": test.processed, "changed": test.changed,
            "counts": test.counts}


def pass_stream(tenant: Any, lo: Any, hi: Any) -> tuple[int, float]:
    started = time.perf_counter()
    n = 0
    for _ in calls_qs(tenant, lo, hi).iterator(chunk_size=CHUNK):
        n += 1
    return n, time.perf_counter() - started


def pass_decide(tenant: Any, draft: Any, lo: Any, hi: Any, limit: int) -> dict[str, Any]:
    from policies.engine import compile_rules
    from policies.services import current_deciders, evaluate

    started = time.perf_counter()
    rows = list(itertools.islice(calls_qs(tenant, lo, hi).iterator(chunk_size=CHUNK), limit))
    fetch = time.perf_counter() - started
    started = time.perf_counter()
    docs = [doc_of(tenant, r) for r in rows]
    build = time.perf_counter() - started
    compiled = compile_rules(draft.default_effect,
                             [{"id": r.pk, **r.as_dict()} for r in draft.rules.all()])
    published = current_deciders(tenant)

    started = time.perf_counter()
    changed = 0
    for doc in docs:
        if compiled.decide(doc).effect != evaluate(tenant, doc, published)[0].effect:
            changed += 1
    both = time.perf_counter() - started
    started = time.perf_counter()
    for doc in docs:
        evaluate(tenant, doc, published)
    before = time.perf_counter() - started
    started = time.perf_counter()
    for doc in docs:
        compiled.decide(doc)
    after = time.perf_counter() - started
    return {"n": len(docs), "fetch": fetch, "build": build, "both": both, "before": before,
            "after": after, "changed": changed}


# -- main --------------------------------------------------------------------------------------


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuse-db", metavar="NAME", required=True,
                        help="the database holding the tool calls (e.g. ledger_bench_admin, "
                        "left by bench.admin_changelist --keep); migrated first, always kept")
    parser.add_argument("--decide-limit", type=int, default=100_000,
                        help="rows per tenant for the decide-only baseline (kept in memory)")
    parser.add_argument("--profile-calls", type=int, default=50_000,
                        help="cProfile run() over about this many calls of the first tenant "
                        "(0: no profile)")
    parser.add_argument("--skip", default="", help="leave out, comma-separated: "
                        "stream,decide,profile")
    parser.add_argument("--keep-tests", action="store_true",
                        help="keep the BackTest rows made here (default: delete them)")
    add_db_arguments(parser, "backtest")
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    args.db_name, args.keep = args.reuse_db, True
    import psycopg

    with psycopg.connect(args.pg_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                        [args.db_name]).fetchone() is None:
            sys.exit(f"--reuse-db: no database {args.db_name!r}")

    with bench_database(args, reuse=True) as db:
        from core.models import Tenant
        from policies.models import BackTest
        from runs.models import Run, ToolCall

        print(environment_line(db), flush=True)
        tenants = list(Tenant.objects.filter(
            pk__in=Run.objects.values("tenant_id").distinct()).order_by("slug"))
        print(f"data: {ToolCall.objects.count():,} tool calls, tenants "
              f"{', '.join(t.slug for t in tenants)} (migrated)", flush=True)
        author, publisher = _users()
        setup = {}
        for tenant in tenants:
            published, draft, done = ensure_policies(tenant, author, publisher)
            setup[tenant.pk] = (published, draft)
            print(f"{tenant.slug}: policy {POLICY}: {done} "
                  f"({published.rules.count()} rules published, {draft.rules.count()} in the "
                  f"draft)", flush=True)
        windows = {t.pk: window_of(t) for t in tenants}
        made: list[int] = []
        rows = []
        try:
            # 1. the back-test itself
            total_n = total_s = total_changed = 0
            for tenant in tenants:
                lo, hi, n = windows[tenant.pk]
                res = pass_backtest(tenant, setup[tenant.pk][1], lo, hi, made)
                total_n += res["processed"]
                total_s += res["seconds"]
                total_changed += res["changed"]
                # the result keeps, per tool, its calls by effect before and after
                changes: dict[str, int] = {}
                for per in res["counts"].values():
                    for side in ("before", "after"):
                        for effect, c in per[side].items():
                            changes[f"{side} {effect}"] = changes.get(f"{side} {effect}", 0) + c
                print(f"  back-test {tenant.slug}: {res['processed']:,} calls in "
                      f"{res['seconds']:.1f} s, {res['changed']:,} changed: "
                      + ", ".join(f"{k} {v:,}" for k, v in sorted(changes.items())),
                      flush=True)
                rows.append([f"run(): back-test {tenant.slug}", res["processed"],
                             res["seconds"], _rate(res["processed"], res["seconds"]),
                             f"{res['changed']:,} changed"])
            rows.append(["run(): both tenants", total_n, total_s, _rate(total_n, total_s),
                         f"{total_changed:,} changed "
                         f"({100 * total_changed / max(total_n, 1):.1f}%)"])

            # 2. (a) stream only
            if "stream" not in skip:
                sn = ss = 0.0
                for tenant in tenants:
                    lo, hi, _ = windows[tenant.pk]
                    n, s = pass_stream(tenant, lo, hi)
                    sn += n
                    ss += s
                    print(f"  stream {tenant.slug}: {n:,} rows in {s:.1f} s", flush=True)
                rows.append(["(a) stream only (same queryset .iterator)", int(sn), ss,
                             _rate(int(sn), ss), f"{100 * ss / total_s:.0f}% of run()"])

            # 3. (b) decide only
            if "decide" not in skip and args.decide_limit > 0:
                agg: dict[str, float] = {}
                for tenant in tenants:
                    lo, hi, _ = windows[tenant.pk]
                    res = pass_decide(tenant, setup[tenant.pk][1], lo, hi, args.decide_limit)
                    for k, v in res.items():
                        agg[k] = agg.get(k, 0) + v
                    print(f"  decide {tenant.slug}: {res['n']:,} docs, both "
                          f"{res['both']:.1f} s, {res['changed']:,} changed", flush=True)
                    gc.collect()
                n = int(agg["n"])
                rows += [
                    ["(b) decide only: published + draft", n, agg["both"],
                     _rate(n, agg["both"]), f"{int(agg['changed']):,} changed"],
                    ["    published alone (evaluate)", n, agg["before"],
                     _rate(n, agg["before"]), ""],
                    ["    draft alone (decide)", n, agg["after"], _rate(n, agg["after"]), ""],
                    ["    input_document from rows", n, agg["build"], _rate(n, agg["build"]),
                     ""],
                    ["    fetch of those rows", n, agg["fetch"], _rate(n, agg["fetch"]), ""],
                ]
            print()
            print(table(["pass", "calls", "seconds", "calls/s", "note"], rows))
            stream_rate = next((r[3] for r in rows if str(r[0]).startswith("(a)")), None)
            record_figure("backtest", f"run() over {total_n:,} recorded calls",
                          f"{_rate(total_n, total_s):,.0f} calls/s", "(none: a figure)",
                          f"stream only {stream_rate:,.0f} rows/s" if stream_rate else "-",
                          f"{_rate(total_n, total_s) / stream_rate:.0%} of stream"
                          if stream_rate else "-", None)

            # 4. profile
            if "profile" not in skip and args.profile_calls > 0:
                from policies.backtest import run

                tenant = tenants[0]
                lo, hi, n = window_of(tenant, args.profile_calls)
                test = new_test(setup[tenant.pk][1], lo, hi, made)
                print(f"\ncProfile of run() over {n:,} calls of {tenant.slug} "
                      "(top 20 by tottime):")
                print(profile_call(lambda: run(test.pk), top=20, sort="tottime"))
        finally:
            if made and not args.keep_tests:
                BackTest.objects.filter(pk__in=made).delete()
                print(f"(deleted the {len(made)} BackTest rows made here)")


if __name__ == "__main__":
    main()
