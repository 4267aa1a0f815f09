"""A secret used as a JSON object key is redacted too, at every level, keeping the structure:
each such key becomes ``[redacted:<label>#n]``, numbered so the keys stay unique."""

from __future__ import annotations

import pytest

from runs.redaction import Redactor

STRIPE = "sk_live_ClxyGS0UdCyLPFhg1R6FylBSlO"
GITHUB = "ghp_R8f2kLmN4pQ7sT1vX9zA3bC6dE0gH5jK2mN8"


@pytest.mark.parametrize("level", ["strict", "standard"])
def test_a_secret_key_is_redacted_and_the_structure_kept(level):
    out = Redactor(level).redact({STRIPE: {"scope": "all"}, GITHUB: 1, "plain": "ok",
                                  "list": [{STRIPE: True}]}, "input")
    assert STRIPE not in repr(out)
    assert GITHUB not in repr(out)
    assert out["[redacted:secret#1]"] == {"scope": "all"}
    assert out["[redacted:secret#2]"] == 1
    assert out["plain"] == "ok"
    assert out["list"] == [{"[redacted:secret#1]": True}]


def test_a_secret_key_under_a_declared_label_is_redacted_too():
    out = Redactor("strict").redact({"args": {STRIPE: "x"}}, "input", {"input.other": "secret"})
    assert out == {"args": {"[redacted:secret#1]": "x"}}


def test_no_redaction_keeps_keys():
    assert Redactor("none").redact({STRIPE: 1}, "input") == {STRIPE: 1}
