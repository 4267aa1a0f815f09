"""The quick proof that a payload is safe never disagrees with the exact walk.

``unsafe_parts`` first asks ``_surely_safe`` (orjson and byte scans in C); only the exact walk
names problems. So the one thing that must hold: whenever the quick proof says "safe", the
walk finds nothing; and every unsafe payload is still reported with its location.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from core import payload_safety
from core.payload_safety import INT64_MAX, INT64_MIN, MAX_DEPTH, unsafe_parts


def exact_walk(value: Any) -> list[tuple[Any, str]]:
    """The walk alone, as it was before the quick proof."""
    original = payload_safety._surely_safe
    payload_safety._surely_safe = lambda _value: False  # type: ignore[assignment]
    try:
        return unsafe_parts(value)
    finally:
        payload_safety._surely_safe = original


tricky_text = st.lists(st.sampled_from(
    ["a", "e", "E", "1", "\x00", "\ud800", "\\", '"', "u0000", "[", "{", "]", "}", "9" * 19,
     "é", "😀"]), max_size=6).map("".join)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([INT64_MAX, INT64_MAX + 1, INT64_MIN, INT64_MIN - 1, 2**64 - 1, 2**64]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e19, -1e19, 9.3e18, 9.2e18, 1e16, 0.5, -0.0]),
)
leaves = st.one_of(st.none(), st.booleans(), numbers, tricky_text)
documents = st.recursive(
    leaves,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(tricky_text, children, max_size=4)),
    max_leaves=30,
)


def nested(depth: int, leaf: Any = "x") -> Any:
    value: Any = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


@settings(max_examples=600, deadline=None)
@given(documents)
def test_the_quick_proof_never_calls_an_unsafe_payload_safe(document: Any) -> None:
    assert unsafe_parts(document) == exact_walk(document)


def test_every_kind_of_problem_is_still_found_with_its_location() -> None:
    document = {
        "ok": ["fine", 1, 2.5, True, None, {"deep": "text"}],
        "nul": "a\x00b",
        "surrogate": ["\ud800"],
        "big": INT64_MAX + 1,
        "big float": 1e19,
        "nul key": {"k\x00": 1},
        "deep": nested(MAX_DEPTH + 1),
    }
    found = {loc[0] for loc, _reason in unsafe_parts(document)}
    assert found == {"nul", "surrogate", "big", "big float", "nul key", "deep"}


def test_nesting_exactly_at_the_limit_is_safe_and_one_more_is_not() -> None:
    assert unsafe_parts(nested(MAX_DEPTH)) == []
    assert unsafe_parts(nested(MAX_DEPTH + 1)) != []


def test_text_that_only_looks_like_a_problem_is_safe() -> None:
    document = {"hash": "3e4f" * 16, "digits": "9" * 40, "escaped": "\\u0000",
                "brackets": "[[[[{{{{" * 20, "flag": False}
    assert unsafe_parts(document) == []


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["list", "dict"]), min_size=MAX_DEPTH - 2,
                max_size=MAX_DEPTH + 2),
       st.lists(leaves, max_size=3))
def test_nesting_around_the_limit_in_any_mix_of_lists_and_objects(kinds: list[str],
                                                                  siblings: list[Any]) -> None:
    value: Any = "leaf"
    for kind in kinds:
        value = [value, *siblings] if kind == "list" else {"k": value, "s": siblings}
    assert unsafe_parts(value) == exact_walk(value)
