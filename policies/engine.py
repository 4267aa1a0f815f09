"""The embedded policy engine: ordered rules, CEL conditions, the strictest match wins.

The input document (the same one OPA receives)::

    {"tenant": {"slug": "acme", "outage_mode": false},
     "agent": {"id": "support-triage"},
     "run": {"id": "run-42"},
     "call": {"id": "c-7"},
     "tool": {"name": "refund_payment", "action_class": "write"},
     "action_class": "write",
     "mode": "live",              # live | sandbox | replay
     "args": {...}}               # the proposed call's arguments

Conditions are CEL (the Rust-backed ``cel`` binding), never Python ``eval``. They are checked
when saved (length and nesting caps, syntax, known variables and fields, a boolean result on
a sample input) because the binding has no cost limit and no type checker. At decision time
an evaluation error fails closed: it counts as a match for deny, require_approval and
sandbox_only rules, and as no match for allow rules.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import cel

from .cel_regex import rewrite_matches
from .models import STRICTNESS, Effect

MAX_CONDITION_LENGTH = 500
MAX_NESTING = 8
ROOTS = frozenset({"tenant", "agent", "run", "call", "tool", "action_class", "mode", "args"})
FIELDS = {"tenant": {"slug", "outage_mode"}, "agent": {"id"}, "run": {"id"}, "call": {"id"},
          "tool": {"name", "action_class"}}
SAMPLE_INPUT: dict[str, Any] = {
    "tenant": {"slug": "sample", "outage_mode": False}, "agent": {"id": "sample-agent"},
    "run": {"id": "sample-run"}, "call": {"id": "sample-call"},
    "tool": {"name": "sample_tool", "action_class": "write"}, "action_class": "write",
    "mode": "live", "args": {}}
# The names of the functions that stand in for matches() (never a rule's own).
REGEX_PREFIX = "__ledger_rx"
_BOUND = re.compile(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_]\w*)\s*,")


def input_document(*, tenant_slug: str, outage_mode: bool, agent_id: str, run_id: str,
                   call_id: str, tool: str, action_class: str, mode: str,
                   args: Mapping[str, Any]) -> dict[str, Any]:
    return {"tenant": {"slug": tenant_slug, "outage_mode": outage_mode},
            "agent": {"id": agent_id}, "run": {"id": run_id}, "call": {"id": call_id},
            "tool": {"name": tool, "action_class": action_class},
            "action_class": action_class, "mode": mode, "args": dict(args)}


def _nesting(text: str) -> int:
    depth = deepest = 0
    quote = None
    for char in text:
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]}":
            depth -= 1
    return deepest


def condition_problems(text: str) -> list[str]:
    """What is wrong with a rule's condition (empty: nothing)."""
    if not text.strip():
        return []
    if len(text) > MAX_CONDITION_LENGTH:
        return [f"a condition is at most {MAX_CONDITION_LENGTH} characters (this one has "
                f"{len(text)})"]
    if _nesting(text) > MAX_NESTING:
        return [f"a condition nests at most {MAX_NESTING} levels of brackets"]
    try:
        program = cel.compile(text)
    except ValueError as exc:
        return [f"syntax error: {str(exc).splitlines()[0]}"]
    bound = set(_BOUND.findall(text))
    unknown = sorted(set(program.variables()) - ROOTS - bound)
    if unknown:
        return [f"unknown variable(s) {', '.join(unknown)}; use {', '.join(sorted(ROOTS))}"]
    for root, names in FIELDS.items():
        for used in re.findall(rf"\b{root}\.([A-Za-z_]\w*)", text):
            if used not in names:
                return [f"{root} has no field {used!r}; it has {', '.join(sorted(names))}"]
    try:
        result = program.execute(SAMPLE_INPUT)
    except KeyError:
        result = False  # a missing args key: allowed (args are free-form), decided at run time
    except Exception as exc:
        return [f"the condition cannot be evaluated: {exc}"]
    if not isinstance(result, bool):
        return [f"a condition must be true or false, not {type(result).__name__}"]
    return []


@dataclass(frozen=True)
class CompiledRule:
    rule_id: int | None
    name: str
    tool: str
    action_classes: frozenset[str]
    agents: frozenset[str]
    modes: frozenset[str]
    outage: str
    effect: str
    program: Any = None
    roots: tuple[str, ...] = ()
    # The functions the program calls in place of ``matches()`` (``policies.cel_regex``).
    functions: Mapping[str, Callable[[Any], bool]] = field(default_factory=dict, compare=False)

    def applies_to(self, doc: Mapping[str, Any]) -> bool:
        """The rule's match on tool, class, agent, mode and outage (not its condition)."""
        if self.action_classes and doc["action_class"] not in self.action_classes:
            return False
        if self.agents and doc["agent"]["id"] not in self.agents:
            return False
        if self.modes and doc["mode"] not in self.modes:
            return False
        if self.outage != "any" and doc["tenant"]["outage_mode"] != (self.outage == "only"):
            return False
        return self.tool == "*" or fnmatch.fnmatchcase(doc["tool"]["name"], self.tool)

    def matches(self, doc: Mapping[str, Any]) -> bool:
        if not self.applies_to(doc):
            return False
        return self.program is None or self.holds(_Contexts(doc).get(self))

    def holds(self, context: Any) -> bool:
        """Whether the condition is true on ``context``; an evaluation error fails closed."""
        try:
            return self.program.execute(context) is True
        except Exception:
            return self.effect != Effect.ALLOW

    @property
    def context_key(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        return self.roots, tuple(sorted(self.functions))


class _Contexts:
    """One decision's CEL inputs, each converted once: a condition gets only the document
    roots it reads (the binding converts every value it is given; the whole document cost
    ~20 us a condition, bench/decisions.py), and conditions reading the same roots share
    one ``cel.Context``."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.made: dict[tuple[tuple[str, ...], tuple[str, ...]], Any] = {}

    def get(self, rule: CompiledRule) -> Any:
        key = rule.context_key
        context = self.made.get(key)
        if context is None:
            # a root missing from the document stays missing: the condition errs, and fails
            # closed, as it did when the document was handed over whole
            variables = {root: self.doc[root] for root in rule.roots if root in self.doc}
            try:
                context = cel.Context(variables, dict(rule.functions) or None)
            except Exception:
                context = variables  # execute() raises on it too: fail closed, as before
            self.made[key] = context
        return context


#: A policy version with no default effect abstains on the calls none of its rules match.
ABSTAIN = ""


@dataclass
class Verdict:
    effect: str  # an Effect, or ABSTAIN
    matched: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    # Some policy confines the call to sandbox: an approval clears it as sandbox only.
    sandboxed: bool = False
    # An external engine's own reference to its answer (OPA: decision id, bundle revisions).
    provenance: dict[str, Any] = field(default_factory=dict)


#: Candidate rule lists kept per compiled policy, one per (tool, class, agent, mode,
#: outage) met; past it the memo starts over (an agent inventing tool names cannot grow it).
MAX_CANDIDATE_KEYS = 2048


@dataclass(frozen=True)
class CompiledPolicy:
    default_effect: str
    rules: tuple[CompiledRule, ...]
    # (tool, action class, agent, mode, outage) -> the rules whose match on them passes
    _candidates: dict[tuple[Any, ...], tuple[CompiledRule, ...]] = field(
        default_factory=dict, compare=False, repr=False)

    def candidates(self, doc: Mapping[str, Any]) -> tuple[CompiledRule, ...]:
        """The rules whose match on tool, class, agent, mode and outage passes for ``doc``,
        in order: worked out once per combination, then looked up."""
        key = (doc["tool"]["name"], doc["action_class"], doc["agent"]["id"], doc["mode"],
               doc["tenant"]["outage_mode"])
        try:
            found = self._candidates.get(key)
        except TypeError:  # an unhashable value (not from input_document): no memo
            return tuple(rule for rule in self.rules if rule.applies_to(doc))
        if found is None:
            found = tuple(rule for rule in self.rules if rule.applies_to(doc))
            if len(self._candidates) >= MAX_CANDIDATE_KEYS:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def decide(self, doc: Mapping[str, Any]) -> Verdict:
        contexts = _Contexts(doc)
        matched = [rule for rule in self.candidates(doc)
                   if rule.program is None or rule.holds(contexts.get(rule))]
        if not matched:
            if self.default_effect == ABSTAIN:
                return Verdict(ABSTAIN, [], "no rule matched; the policy has no default")
            return Verdict(self.default_effect, [], "no rule matched: the policy's default")
        strictest = max(matched, key=lambda r: STRICTNESS[Effect(r.effect)])
        return Verdict(strictest.effect,
                       [{"id": r.rule_id, "name": r.name, "effect": r.effect} for r in matched],
                       f"rule {strictest.name!r} is the strictest match")


def compile_rules(default_effect: str, rules: Sequence[Mapping[str, Any]]) -> CompiledPolicy:
    compiled = []
    for index, rule in enumerate(rules):
        condition = (rule.get("condition") or "").strip()
        program: Any = None
        functions: dict[str, Callable[[Any], bool]] = {}
        if condition:
            source, functions = rewrite_matches(condition, f"{REGEX_PREFIX}_{index}")
            if functions and REGEX_PREFIX in condition:
                source, functions = condition, {}  # a name of ours written in the rule
            program = cel.compile(source)
        compiled.append(CompiledRule(
            rule_id=rule.get("id"), name=rule["name"], tool=rule.get("tool") or "*",
            action_classes=frozenset(rule.get("action_classes") or ()),
            agents=frozenset(rule.get("agents") or ()),
            modes=frozenset(rule.get("modes") or ()), outage=rule.get("outage") or "any",
            effect=rule["effect"], program=program,
            roots=tuple(sorted(set(program.variables()) & ROOTS)) if program else (),
            functions=functions))
    return CompiledPolicy(default_effect, tuple(compiled))


@lru_cache(maxsize=256)
def compiled_version(version_id: int, checksum: str) -> CompiledPolicy:
    """A published version, compiled once per process (its checksum pins its content)."""
    from .models import PolicyVersion
    from .services import FREEZE_POLICY

    version = PolicyVersion.objects.select_related("policy").get(pk=version_id)
    rules = [{"id": r.pk, **r.as_dict()} for r in version.rules.all()]
    # A freeze is about the tools it names, whatever default a version published before
    # freezes lost theirs still carries: it can only tighten.
    default = ABSTAIN if version.policy.name == FREEZE_POLICY else version.default_effect
    return compile_rules(default, rules)
