"""A replayed call's differences are redacted as their values would be in place in the output:
declared labels through ``[*]`` and exact items, a label on an ancestor, tenant path rules and
the detectors; a huge index costs nothing; what is not a difference is redacted whole."""

from __future__ import annotations

from operations.replay_redaction import redact_at, redact_divergence
from runs.redaction import Redactor, TenantRule

STRIPE = "sk_live_ClxyGS0UdCyLPFhg1R6FylBSlO"
LABELS = {"output.owners[*].name": "confidential", "output.rows[2].x": "secret",
          "output.customer": "confidential"}


def redacted(value):
    return isinstance(value, dict) and "redacted" in value


def test_values_are_redacted_as_in_place():
    strict = Redactor("strict", [TenantRule("$.output.ticket", "secret")])
    assert redacted(redact_at(strict, LABELS, "$.owners[3].name", "Grace Hopper"))  # [*]
    assert redacted(redact_at(strict, LABELS, "$.owners[123456789].name", "Alan Kay"))
    assert redacted(redact_at(strict, LABELS, "$.rows[2].x", "plain"))  # the exact item
    assert redact_at(strict, LABELS, "$.rows[1].x", "plain") == "plain"  # not that one
    marker = redact_at(strict, LABELS, "$.customer.name", "Ada Lovelace")  # ancestor's label
    assert marker["redacted"] == "confidential"
    assert redacted(redact_at(strict, LABELS, "$.ticket", "harbour-lantern"))  # tenant rule
    assert redact_at(strict, LABELS, "$.note", {"k": STRIPE})["k"]["reason"].startswith(
        "detector:")
    assert redact_at(strict, LABELS, "$.ok", True) is True


def test_a_divergence_keeps_its_shape_and_shows_no_labelled_value():
    strict = Redactor("strict", [])
    divergence = [
        {"path": "$.customer.name", "change": "changed", "recorded": "Ada Lovelace",
         "replayed": "Ada Byron"},
        {"path": "$.ok", "change": "changed", "recorded": True, "replayed": False},
        {"path": "$.extra", "change": "added", "recorded": None, "replayed": {"k": STRIPE},
         "hint": f"was {STRIPE}"},
    ]
    out = redact_divergence(strict, LABELS, divergence)
    assert [d["path"] for d in out] == ["$.customer.name", "$.ok", "$.extra"]
    assert [d["change"] for d in out] == ["changed", "changed", "added"]
    assert "Ada" not in repr(out)
    assert STRIPE not in repr(out)
    assert (out[1]["recorded"], out[1]["replayed"]) == (True, False)
    assert redact_divergence(strict, LABELS, f"not a list {STRIPE}") == (
        "not a list [redacted:secret]")
    assert redact_divergence(Redactor("none", []), LABELS, divergence) == divergence
