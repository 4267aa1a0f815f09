"""Policy operations: drafting, publishing and deciding. Admin, API, CLI and tasks call these."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from core.actors import Actor, is_person, person_of
from core.canonical import content_hash
from core.metrics import count_decision
from core.models import Tenant
from runs.annotations import annotate
from runs.bulk import insert_one
from runs.models import AnnotationKind

from .engine import (
    ABSTAIN,
    CompiledPolicy,
    Verdict,
    compiled_version,
    condition_problems,
    input_document,
)
from .models import (
    STRICTNESS,
    Decision,
    Effect,
    Engine,
    Policy,
    PolicyVersion,
    Rule,
    VersionStatus,
)

# With no published policy, reads go ahead and everything else waits for a person.
NO_POLICY_EFFECTS = {"read": Effect.ALLOW}


class PolicyError(ValidationError):
    pass


def version_content(version: PolicyVersion) -> dict[str, Any]:
    """Everything that decides under the version: what its checksum covers."""
    return {"policy": version.policy.name, "number": version.number,
            **{name: getattr(version, name) for name in PolicyVersion.DECIDING_FIELDS},
            "rules": [r.as_dict() for r in version.rules.all()]}


@transaction.atomic
def create_draft(policy: Policy, *, by: Actor, change_note: str,
                 copy_from: PolicyVersion | None = None, **deciding: Any) -> PolicyVersion:
    """A new draft, starting from ``copy_from`` (or the published version) when given; its
    deciding settings (``PolicyVersion.DECIDING_FIELDS``) may be set in ``deciding``."""
    unknown = set(deciding) - set(PolicyVersion.DECIDING_FIELDS)
    if unknown:
        raise PolicyError(f"not a deciding setting of a version: {', '.join(sorted(unknown))}")
    base = copy_from or policy.versions.filter(status=VersionStatus.PUBLISHED).first()
    number = (policy.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    inherited = ({name: getattr(base, name) for name in PolicyVersion.DECIDING_FIELDS}
                 if base is not None else {"default_effect": Effect.ALLOW})
    draft = PolicyVersion.objects.create(
        tenant=policy.tenant, policy=policy, number=number, change_note=change_note,
        based_on=base, author=person_of(by), **{**inherited, **deciding})
    if base is not None:
        Rule.objects.bulk_create([
            Rule(tenant=policy.tenant, version=draft, position=r.position, name=r.name,
                 tool=r.tool, action_classes=r.action_classes, agents=r.agents,
                 modes=r.modes, outage=r.outage, condition=r.condition, effect=r.effect)
            for r in base.rules.all()])
    return draft


@transaction.atomic
def publish_policy_version(version: PolicyVersion, *, by: Actor, _portal_authored: bool = False
                           ) -> PolicyVersion:
    """Publish a draft: it becomes immutable, the version it replaces is retired, and the
    change is annotated in the tenant's governance log. Whoever wrote the draft, or edited it
    or its rules since, cannot publish it (separation of duties); only the portal's own freeze
    drafts, authored by nobody, are published by the operator who asked for them."""
    # The version and its policy (one publisher per policy at a time), not the tenant: stores
    # of the tenant check their foreign key to its row.
    version = PolicyVersion.objects.select_for_update(
        no_key=True, of=("self", "policy")).select_related("policy", "tenant").get(pk=version.pk)
    if version.status != VersionStatus.DRAFT:
        raise PolicyError(f"{version} is {version.status}; only drafts are published")
    if is_person(by, version.author_id):
        raise PolicyError("the author of a version cannot publish it (separation of duties)")
    if not _portal_authored and any(is_person(by, editor) for editor in editors_of(version)):
        raise PolicyError("you edited this draft, so someone else publishes it (separation of "
                          "duties)")
    for rule in version.rules.all():
        problems = condition_problems(rule.condition)
        if problems:
            raise PolicyError(f"rule {rule.name!r}: {problems[0]}")
    now = timezone.now()
    previous = list(PolicyVersion.objects.select_for_update().filter(
        policy=version.policy, status=VersionStatus.PUBLISHED))
    for old in previous:
        old.status, old.retired_at = VersionStatus.RETIRED, now
        old.save(update_fields=["status", "retired_at"])
    version.status, version.published_at = VersionStatus.PUBLISHED, now
    version.publisher = person_of(by)
    version.checksum = content_hash(version_content(version))
    version.save(update_fields=["status", "published_at", "publisher", "checksum"])
    annotate(version.tenant, AnnotationKind.POLICY_CHANGE,
             f"published {version.policy.name} v{version.number}: {version.change_note}",
             by=by, data={"policy": version.policy.name, "version": version.number,
                          "checksum": version.checksum,
                          "retired": [v.number for v in previous]})
    return version


def editors_of(version: PolicyVersion) -> set[int]:
    """Everyone who changed the version or any of its rules while it was a draft (from their
    history, whatever the entry point)."""
    editors = set(version.history.exclude(history_user=None).values_list(
        "history_user_id", flat=True))
    editors |= set(Rule.history.filter(version_id=version.pk).exclude(
        history_user=None).values_list("history_user_id", flat=True))
    return editors


def published_versions(tenant: Tenant) -> list[PolicyVersion]:
    return list(PolicyVersion.objects.filter(tenant=tenant, status=VersionStatus.PUBLISHED)
                .select_related("policy").order_by("policy__name"))


Decider = tuple[PolicyVersion, Any]


@dataclass(frozen=True)
class DecisionInputs:
    """What one decision reads from the database, in one query: the tenant's published
    versions (in policy-name order, as ``published_versions``), the tool's registered class,
    and whether any governed exception might be active."""

    versions: list[PolicyVersion]
    registered_class: str | None
    exceptions_possible: bool


#: Published versions by (id, checksum), loaded once per process: what decides under a
#: published version never changes (``PolicyVersion.DECIDING_FIELDS`` and rules are under its
#: checksum), and which versions are published is read anew for every decision.
_KEPT_VERSIONS: dict[tuple[int, str], PolicyVersion] = {}
MAX_KEPT_VERSIONS = 1024
_INPUTS_SQL: list[str] = []


def _inputs_sql() -> str:
    """Built once: Django's query compiler costs more than PostgreSQL's answer here (about
    0.65 ms for published_versions, bench/decisions.py)."""
    if not _INPUTS_SQL:
        from runs.models import Tool

        from .models import GovernedException

        q = connection.ops.quote_name
        version, policy = q(PolicyVersion._meta.db_table), q(Policy._meta.db_table)
        tool, exc = q(Tool._meta.db_table), q(GovernedException._meta.db_table)
        # table names from the models, values as parameters
        _INPUTS_SQL.append(
            f"SELECT 0, v.id, v.checksum, p.name FROM {version} v JOIN {policy} p "  # noqa: S608
            f"ON p.id = v.policy_id WHERE v.tenant_id = %s AND v.status = %s "
            f"UNION ALL SELECT 1, NULL, t.action_class, NULL FROM {tool} t "
            f"WHERE t.tenant_id = %s AND t.name = %s "
            f"UNION ALL SELECT 2, COUNT(*), NULL, NULL FROM {exc} e "
            f"WHERE e.tenant_id = %s AND e.status = %s AND e.ends_at > %s "
            f"ORDER BY 1, 4")
    return _INPUTS_SQL[0]


def decision_inputs(tenant: Tenant, tool: str) -> DecisionInputs:
    from .models import ExceptionStatus

    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(_inputs_sql(), [tenant.pk, VersionStatus.PUBLISHED.value, tenant.pk, tool,
                                        tenant.pk, ExceptionStatus.ACTIVE.value, now])
        rows = cursor.fetchall()
    wanted = [(row[1], row[2]) for row in rows if row[0] == 0]
    registered = next((row[2] for row in rows if row[0] == 1), None)
    possible = any(row[0] == 2 and row[1] for row in rows)
    missing = [pk for pk, checksum in wanted if (pk, checksum) not in _KEPT_VERSIONS]
    if missing:
        if len(_KEPT_VERSIONS) + len(missing) > MAX_KEPT_VERSIONS:
            _KEPT_VERSIONS.clear()
        for version in PolicyVersion.objects.filter(tenant=tenant, pk__in=missing
                                                    ).select_related("policy"):
            _KEPT_VERSIONS[(version.pk, version.checksum)] = version
    versions = [_KEPT_VERSIONS.get(key) for key in wanted]
    if any(version is None for version in versions):  # changed between the two reads
        return DecisionInputs(published_versions(tenant), registered, possible)
    return DecisionInputs([v for v in versions if v is not None], registered, possible)


def decider_for(version: PolicyVersion) -> Decider:
    """``version`` with the function that decides under it (published or retired: immutable)."""
    if version.engine == Engine.OPA:
        from .opa import decide_with_opa

        return (version, lambda doc, v=version: decide_with_opa(v, doc))
    compiled: CompiledPolicy = compiled_version(version.pk, version.checksum)
    return (version, compiled.decide)


def current_deciders(tenant: Tenant) -> list[Decider]:
    """The tenant's published versions, each with the function that decides under it."""
    return [decider_for(version) for version in published_versions(tenant)]


def evaluate(tenant: Tenant, doc: dict[str, Any], deciders: list[Decider] | None = None
             ) -> tuple[Verdict, PolicyVersion | None, str]:
    """Every published policy of the tenant decides; the strictest effect wins. A policy
    without a default abstains on calls none of its rules match (a freeze only tightens); when
    every policy abstains, or none is published, the baseline applies."""
    if deciders is None:
        deciders = current_deciders(tenant)
    best: tuple[Verdict, PolicyVersion] | None = None
    matched: list[dict[str, Any]] = []
    provenance: list[dict[str, Any]] = []
    sandboxed = False
    for version, decide in deciders:
        verdict = decide(doc)
        if verdict.provenance:
            provenance.append({"policy": version.policy.name, "version": version.number,
                               **verdict.provenance})
        if verdict.effect == ABSTAIN:
            continue
        matched += [{**m, "policy": version.policy.name, "version": version.number}
                    for m in verdict.matched]
        sandboxed = sandboxed or verdict.effect == Effect.SANDBOX_ONLY
        if best is None or STRICTNESS[Effect(verdict.effect)] > STRICTNESS[Effect(
                best[0].effect)]:
            best = (verdict, version)
    if best is None:
        effect = NO_POLICY_EFFECTS.get(doc["action_class"], Effect.REQUIRE_APPROVAL)
        return Verdict(effect, matched, "no published policy decides this call: reads are "
                       "allowed, every other action needs approval",
                       provenance={"engines": provenance} if provenance else {}
                       ), None, Engine.EMBEDDED
    verdict, version = best
    return (Verdict(verdict.effect, matched, verdict.reason, sandboxed=sandboxed,
                    provenance={"engines": provenance} if provenance else {}), version,
            version.engine)


def record_decision(tenant: Tenant, doc: dict[str, Any], verdict: Verdict,
                    version: PolicyVersion | None, engine: str, started: float,
                    asked_by: str, approval: Any = None, exception: Any = None,
                    replay_id: int | None = None,
                    engine_answers: list[dict[str, Any]] | None = None) -> Decision:
    decision = _decision(tenant, doc, verdict, version, engine, started, asked_by, approval,
                         exception, replay_id, engine_answers)
    return insert_one(decision)


def _decision(tenant: Tenant, doc: dict[str, Any], verdict: Verdict,
              version: PolicyVersion | None, engine: str, started: float, asked_by: str,
              approval: Any, exception: Any, replay_id: int | None = None,
              engine_answers: list[dict[str, Any]] | None = None) -> Decision:
    """``engine_answers``: what the engines said before approvals or exceptions applied
    (default: from ``verdict``)."""
    if engine_answers is None:
        engine_answers = verdict.provenance.get("engines", [])
    return Decision(
        replay_id=replay_id,
        tenant=tenant, run_id=doc["run"]["id"], call_id=doc["call"]["id"],
        agent_id=doc["agent"]["id"], tool=doc["tool"]["name"], action_class=doc["action_class"],
        declared_action_class=doc["tool"].get("declared_action_class", ""),
        mode=doc["mode"], input=doc, effect=verdict.effect, reason=verdict.reason,
        policy_version=version, matched_rules=verdict.matched, engine=engine,
        engine_answers=engine_answers,
        latency_us=int((time.perf_counter() - started) * 1_000_000), approval=approval,
        exception=exception, decided_by=asked_by)


@dataclass(frozen=True)
class ProposedCall:
    tool: str
    action_class: str
    arguments: dict[str, Any]
    mode: str = "live"
    run_id: str = ""
    call_id: str = ""
    agent_id: str = ""
    approval_id: int | None = None
    # Set by a replay: its decisions are the replay's, never the original call's.
    replay_id: int | None = None


def decide_tool_call(tenant: Tenant, call: ProposedCall, asked_by: str = "",
                     requester: Any = None, pinned_version: PolicyVersion | None = None,
                     open_approval: bool = True, requester_key: Any = None) -> Decision:
    """Decide a proposed tool call and store the decision (the policy trail).

    ``require_approval`` opens an approval request bound to the exact call (unless
    ``open_approval`` is False: a sandbox replay, where nothing with side effects runs). Asking
    again with its ``approval_id`` gives allow once, to the one decision that claims it, when
    a person approved it and nothing it is bound to differs (run, call, agent, who asks, tool,
    arguments, the policy version now in force); deny otherwise. An approval never widens an
    effect: it only answers ``require_approval``. ``pinned_version`` decides under that one
    version instead of everything published (replays that pin one).
    """
    from approvals.models import ApprovalRequest
    from approvals.services import mark_consumed, request_approval

    started = time.perf_counter()
    loaded_exceptions: list[Any] | None = None
    if pinned_version is None:
        inputs = decision_inputs(tenant, call.tool)
        deciders = [decider_for(version) for version in inputs.versions]
        registry = {} if inputs.registered_class is None else {
            call.tool: inputs.registered_class}
        loaded_exceptions = None if inputs.exceptions_possible else []
    else:
        deciders, registry = [decider_for(pinned_version)], None
    doc = _document(tenant, call, registry, requester_key=requester_key)
    verdict, version, engine = evaluate(tenant, doc, deciders)
    engine_answers = verdict.provenance.get("engines", [])
    verdict = _known_or_held(tenant, doc, verdict)
    exception = _overriding_exception(tenant, doc, verdict, version, loaded_exceptions)
    # A transaction only where an approval is opened or used with the decision: otherwise the
    # decision is one INSERT, stored before the agent hears the answer.
    opens = exception is None and (call.approval_id is not None or (
        verdict.effect == Effect.REQUIRE_APPROVAL and open_approval))
    with transaction.atomic() if opens else contextlib.nullcontext():
        approval = None
        consumed = False
        if exception is not None:
            verdict = _overridden(verdict, exception)
        elif call.approval_id is not None:
            approval = ApprovalRequest.objects.filter(tenant=tenant, pk=call.approval_id).first()
            verdict, consumed = _with_approval(
                verdict, approval, _binding(tenant, call, version, asked_by, requester,
                                            requester_key))
        elif verdict.effect == Effect.REQUIRE_APPROVAL and open_approval:
            approval = request_approval(
                tenant, tool=call.tool, action_class=doc["action_class"],
                arguments=call.arguments, run_id=call.run_id, call_id=call.call_id,
                agent_id=call.agent_id, policy_version=version, matched_rules=verdict.matched,
                requested_by=asked_by, requester=requester, requester_key=requester_key)
        decision = record_decision(tenant, doc, verdict, version, engine, started, asked_by,
                                   approval, exception, call.replay_id, engine_answers)
        if consumed and approval is not None:
            mark_consumed(approval, decision)
        count_decision(decision.effect, started)
        return decision


def _binding(tenant: Tenant, call: ProposedCall, version: PolicyVersion | None, asked_by: str,
             requester: Any, requester_key: Any) -> dict[str, Any]:
    from approvals.services import binding_of

    return binding_of(tenant.pk, run_id=call.run_id, call_id=call.call_id,
                      agent_id=call.agent_id, asked_by=asked_by,
                      requester_id=getattr(requester, "pk", None),
                      requester_key_id=getattr(requester_key, "pk", None), tool=call.tool,
                      arguments=call.arguments, version=version)


@dataclass
class DecisionContext:
    """What a run of decisions is taken against, loaded once: the deciders (the tenant's
    published versions, or the pinned one) and, when a verdict other than allow first needs
    them, the tenant's active governed exceptions.

    A sandbox replay loads one per group of steps instead of querying both per call, so a
    version published (or an exception granted or revoked) while it runs applies from its next
    group on.
    """

    tenant: Tenant
    deciders: list[Decider]
    exceptions: list[Any] | None = None
    tools: dict[str, str] | None = None

    def registry(self) -> dict[str, str]:
        if self.tools is None:
            self.tools = registered_classes(self.tenant)
        return self.tools

    def active_exceptions(self) -> list[Any]:
        if self.exceptions is None:
            from .exceptions import active_exceptions

            self.exceptions = active_exceptions(self.tenant)
        return self.exceptions


def decision_context(tenant: Tenant, pinned_version: PolicyVersion | None = None
                     ) -> DecisionContext:
    deciders = (current_deciders(tenant) if pinned_version is None
                else [decider_for(pinned_version)])
    return DecisionContext(tenant, deciders)


def unsaved_sandbox_decision(context: DecisionContext, call: ProposedCall, asked_by: str = ""
                             ) -> Decision:
    """``decide_tool_call`` for a call that opens no approval and carries none (a sandbox
    replay: nothing with side effects runs), decided against ``context``. The ``Decision``
    comes back unsaved, for the caller to store with others in one INSERT, in the same
    transaction as what it decided."""
    if call.approval_id is not None:
        raise ValueError("a decision about an approval request goes through decide_tool_call")
    started = time.perf_counter()
    tenant = context.tenant
    doc = _document(tenant, call, context.registry())
    verdict, version, engine = evaluate(tenant, doc, context.deciders)
    engine_answers = verdict.provenance.get("engines", [])
    verdict = _known_or_held(tenant, doc, verdict)
    exception = None if verdict.effect == Effect.ALLOW else _overriding_exception(
        tenant, doc, verdict, version, context.active_exceptions())
    if exception is not None:
        verdict = _overridden(verdict, exception)
    return _decision(tenant, doc, verdict, version, engine, started, asked_by, None, exception,
                     call.replay_id, engine_answers)


def foreseen_effect(tenant: Tenant, call: ProposedCall) -> str:
    """The effect ``decide_tool_call`` would give ``call`` now, before any approval, without
    recording anything (to learn whether a batch of calls would all go ahead before asking
    for any of them)."""
    doc = _document(tenant, call)
    verdict, version, _ = evaluate(tenant, doc)
    verdict = _known_or_held(tenant, doc, verdict)
    exception = _overriding_exception(tenant, doc, verdict, version)
    return (_overridden(verdict, exception) if exception is not None else verdict).effect


CLASS_STRICTNESS = {"read": 0, "write": 1, "delete": 2, "exfil": 3}


def registered_classes(tenant: Tenant) -> dict[str, str]:
    """The tenant's tool registry: tool name -> action class."""
    from runs.models import Tool

    return dict(Tool.objects.filter(tenant=tenant).values_list("name", "action_class"))


def _document(tenant: Tenant, call: ProposedCall, registry: dict[str, str] | None = None,
              requester_key: Any = None) -> dict[str, Any]:
    """The policy input for ``call``. Its action class is the registry's when the tool is
    registered, or the declared one where that is stricter; a declared class that differs
    stays in the document (``tool.declared_action_class``), and ``tool.registered`` says
    whether the registry knows the tool at all. ``agent.verified`` says whether the agent id
    is vouched for by the asking key's binding, rather than only claimed."""
    if registry is None:
        from runs.models import Tool

        found = Tool.objects.filter(tenant=tenant, name=call.tool).values_list(
            "action_class", flat=True).first()
    else:
        found = registry.get(call.tool)
    declared = call.action_class
    action_class = declared if found is None or CLASS_STRICTNESS.get(declared, 3) >= \
        CLASS_STRICTNESS.get(found, 3) else found
    doc = input_document(tenant_slug=tenant.slug, outage_mode=tenant.outage_mode,
                         agent_id=call.agent_id, run_id=call.run_id, call_id=call.call_id,
                         tool=call.tool, action_class=action_class, mode=call.mode,
                         args=call.arguments)
    doc["tool"]["registered"] = found is not None
    doc["agent"]["verified"] = requester_key is not None and call.agent_id in (
        requester_key.agent_ids or ())
    if action_class != declared:
        doc["tool"]["declared_action_class"] = declared
    return doc


def _known_or_held(tenant: Tenant, doc: dict[str, Any], verdict: Verdict) -> Verdict:
    """The verdict with what the registry says: an unregistered tool that is not declared a
    read waits for a person (unless the tenant trusts declared classes); a registered class
    the agent understated is named in the reason."""
    if doc["tool"].get("declared_action_class"):
        verdict = Verdict(verdict.effect, verdict.matched,
                          f"{verdict.reason} (the tool is registered as "
                          f"{doc['action_class']}, declared "
                          f"{doc['tool']['declared_action_class']})", verdict.sandboxed)
    if (doc["tool"]["registered"] or doc["action_class"] == "read"
            or tenant.unregistered_tools == "trust_declared"
            or STRICTNESS[Effect(verdict.effect)] >= STRICTNESS[Effect.REQUIRE_APPROVAL]):
        return verdict
    return Verdict(Effect.REQUIRE_APPROVAL, verdict.matched,
                   f"{doc['tool']['name']} is not in the tool registry and is declared "
                   f"{doc['action_class']}: a person decides (policy said {verdict.effect})",
                   verdict.sandboxed or verdict.effect == Effect.SANDBOX_ONLY)


def _overridden(verdict: Verdict, exception: Any) -> Verdict:
    return Verdict(exception.effect, verdict.matched,
                   f"governed exception {exception.pk} overrides {verdict.effect}: "
                   f"{exception.justification}")


def _overriding_exception(tenant: Tenant, doc: dict[str, Any], verdict: Verdict,
                          version: PolicyVersion | None, loaded: list[Any] | None = None
                          ) -> Any:
    from .exceptions import applicable_exception

    if verdict.effect == Effect.ALLOW:
        return None
    exception = applicable_exception(tenant, doc, version, loaded)
    if exception is None or STRICTNESS[Effect(exception.effect)] >= STRICTNESS[Effect(
            verdict.effect)]:
        return None
    return exception


def _with_approval(verdict: Verdict, approval: Any, binding: dict[str, Any]
                   ) -> tuple[Verdict, bool]:
    """The verdict for a call presented with an approval request, and whether this decision
    consumed the approval."""
    from approvals.models import Status
    from approvals.services import binding_differences, claim_approval, expire_if_overdue

    if approval is None:
        return Verdict(Effect.DENY, verdict.matched, "no such approval request"), False
    if verdict.effect != Effect.REQUIRE_APPROVAL:
        # deny outranks an earlier approval; allow needs none; sandbox_only stays sandbox:
        # an approval never widens an effect
        return verdict, False
    differences = binding_differences(approval, binding)
    if differences:
        return Verdict(Effect.DENY, verdict.matched, (
            f"the call differs from what approval request {approval.pk} was asked for "
            f"({', '.join(differences)}); it is refused, not waved through")), False
    if approval.status == Status.PENDING and expire_if_overdue(approval):
        approval.status = Status.EXPIRED
    if approval.status == Status.PENDING:
        return Verdict(Effect.REQUIRE_APPROVAL, verdict.matched,
                       f"waiting for approval request {approval.pk}"), False
    if approval.status != Status.APPROVED:
        return Verdict(Effect.DENY, verdict.matched, f"approval request {approval.pk} was "
                       f"{approval.status}"), False
    if not claim_approval(approval):
        used = type(approval).objects.filter(pk=approval.pk).values_list(
            "consumed_by_id", flat=True).first()
        return Verdict(Effect.DENY, verdict.matched, f"approval request {approval.pk} was "
                       f"already used by decision {used}; an approval clears one call"), False
    if verdict.sandboxed:  # an approval never widens an effect: sandbox stays sandbox
        return Verdict(Effect.SANDBOX_ONLY, verdict.matched, f"approved (request "
                       f"{approval.pk}), used by this decision; still sandbox only: a policy "
                       "confines this call to its dry run", sandboxed=True), True
    return Verdict(Effect.ALLOW, verdict.matched, f"approved (request {approval.pk}), used "
                   "by this decision"), True


FREEZE_POLICY = "tool-freezes"
FREEZE_EFFECTS = {"deny": Effect.DENY, "sandbox": Effect.SANDBOX_ONLY}


def _freeze_rule_name(tool: str) -> str:
    return f"freeze {tool}"


@transaction.atomic
def freeze_tool(tenant: Tenant, tool: str, *, by: Actor, mode: str = "deny",
                incident: str = "") -> PolicyVersion:
    """Block (``deny``) or sandbox a tool at once: a new published version of the tenant's
    ``tool-freezes`` policy with one more rule, annotated in the governance log.

    An emergency action of one operator: the portal authors the version and the operator
    publishes it, both on the record.
    """
    if mode not in FREEZE_EFFECTS:
        raise PolicyError(f"unknown freeze mode {mode!r}; use deny or sandbox")
    return _republish_freezes(tenant, by=by, add=(tool, FREEZE_EFFECTS[mode]), remove=None,
                              note=f"freeze {tool} ({mode})" + (
                                  f" for incident {incident}" if incident else ""),
                              incident=incident)


@transaction.atomic
def unfreeze_tool(tenant: Tenant, tool: str, *, by: Actor, incident: str = "") -> PolicyVersion:
    return _republish_freezes(tenant, by=by, add=None, remove=tool, note=f"unfreeze {tool}" + (
        f" for incident {incident}" if incident else ""), incident=incident)


def _republish_freezes(tenant: Tenant, *, by: Actor, add: tuple[str, str] | None,
                       remove: str | None, note: str, incident: str) -> PolicyVersion:
    policy, _ = Policy.objects.get_or_create(
        tenant=tenant, name=FREEZE_POLICY,
        defaults={"description": "Tools frozen by operators (ledger freeze / admin action)."})
    Policy.objects.select_for_update().filter(pk=policy.pk).first()  # one freeze at a time
    draft = create_draft(policy, by=None, change_note=note)
    draft.default_effect = ABSTAIN  # a freeze decides only the tools it names
    draft.save(update_fields=["default_effect"])
    frozen = {r.tool for r in draft.rules.all()}
    if remove is not None:
        if remove not in frozen:
            raise PolicyError(f"{remove} is not frozen")
        draft.rules.filter(tool=remove).delete()
    if add is not None:
        tool, effect = add
        draft.rules.filter(tool=tool).delete()
        Rule.objects.create(tenant=tenant, version=draft, position=len(frozen),
                            name=_freeze_rule_name(tool), tool=tool, effect=effect)
    version = publish_policy_version(draft, by=by, _portal_authored=True)
    if incident:
        annotate(tenant, AnnotationKind.INCIDENT_LINK, f"{note}", by=by,
                 data={"incident": incident, "policy": FREEZE_POLICY,
                       "version": version.number})
    return version


def frozen_tools(tenant: Tenant) -> dict[str, str]:
    version = PolicyVersion.objects.filter(tenant=tenant, policy__name=FREEZE_POLICY,
                                           status=VersionStatus.PUBLISHED).first()
    return {} if version is None else {r.tool: r.effect for r in version.rules.all()}
