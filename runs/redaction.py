"""Redaction of ledger records: declared labels, tenant rules and detectors, at a level.

A value's label is the highest of

- the label the agent declared for its path (exact, through a ``[*]`` item wildcard, or on an
  ancestor: a label on ``input.customer`` covers everything under it);
- the labels of the tenant's rules that match it: a field-name glob (``*password*``) matched
  case-insensitively against the value's key, or a JSON path (``$.messages[*].content``) matched
  against its full path;
- for string leaves, what the detectors find in them: secrets (label ``secret``) and personal
  data (label ``confidential``).

The level says which labels are replaced by a :func:`marker`:

- ``strict`` (the default): ``confidential`` and above, so every detector hit;
- ``standard``: ``restricted`` and above, so secrets but not personal data;
- ``none``: nothing (the value is still copied).

A labelled dict or list is replaced whole, by one marker. In a string, a detector replaces only
what it matched, by the marker's text (``"mail ada@example.com now"`` becomes ``"mail
[redacted:confidential] now"``); a string that is nothing but the match becomes a marker. Keys are
never redacted. A marker is recognised again when it sits at its own path, so redacting twice
changes nothing. A declared label that is not a label counts as ``secret`` (fail closed); a
field-name rule also matches the root's name (a rule ``error`` covers the whole error).

Detectors (names in :data:`DETECTORS`; a marker's reason is ``detector:<name>``):

- secrets: prefixed keys (``sk_live_``/``sk_test_``/``rk_live_``, ``sk-``, ``AKIA``/``ASIA``,
  ``ghp_``/``gho_``/``ghs_``/``github_pat_``, ``xoxb-``/``xoxp-``, ``AIza``, ``glpat-``,
  ``lpk_``), JWTs, PEM private keys, passwords in URLs, ``Bearer``/``Basic`` credentials,
  ``password=``/``token:``/``api_key=``... assignments, and high-entropy tokens (>= 20
  characters of ``[A-Za-z0-9+/_=-]``, mixed case with digits or symbols, entropy >= ~4 bits/char,
  not mostly words; this finds ~94% of random 20-character tokens and ~99% from 32 characters,
  while hex ids, hashes, UUIDs, ULIDs and identifiers like ``ReviewPullRequest2024`` stay);
  Values that stand for a secret are not one: templates (``<token>``, ``${TOKEN}``,
  ``{{ x }}``, ``%KEY%``, ``$KEY``), upper-case names (``YOUR_API_KEY``), samples
  (``...EXAMPLE``, ``sk-xxxx...``) and filler; nor are subresource-integrity hashes, data-URI
  payloads and base64 of plain prose (decoded and checked for secrets itself);
- personal data: emails (not a URL's user nor a git remote like ``git@host:org/repo``); phones
  (``+`` international, North American with separators, trunk-0 national with separators;
  never bare digit strings); cards (13-19 digits passing Luhn, written in groups or starting
  like a card brand; integer leaves too); IBANs (upper case, the country's length, mod-97).

Pure Python, no Django: everything is compiled once per :class:`Redactor`; the detectors are
gated by cheap tests (a substring, one character-class scan) before any costlier regex runs.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = [
    "DETECTORS",
    "LABELS",
    "LEVELS",
    "PERSONAL_DETECTORS",
    "SECRET_DETECTORS",
    "Redactor",
    "TenantRule",
    "detect",
    "marker",
]

LABELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted", "secret")
LEVELS: tuple[str, ...] = ("none", "standard", "strict")

_RANK: dict[str, int] = {label: rank for rank, label in enumerate(LABELS)}
_CONFIDENTIAL = _RANK["confidential"]
_RESTRICTED = _RANK["restricted"]
_SECRET = _RANK["secret"]
# The lowest label each level replaces.
_THRESHOLD = {"strict": _CONFIDENTIAL, "standard": _RESTRICTED}

# Detector names, in the order they are tried (the first that fires names the reason).
SECRET_DETECTORS: tuple[str, ...] = (
    "private_key", "stripe_key", "openai_key", "aws_key", "github_token", "slack_token",
    "slack_webhook", "sendgrid_key", "twilio_key", "google_key", "gitlab_token", "ledger_key",
    "jwt", "url_password", "bearer_token", "basic_auth", "assignment", "keyed_secret",
    "high_entropy",
)
PERSONAL_DETECTORS: tuple[str, ...] = ("email", "iban", "card", "ssn", "phone")
DETECTORS: dict[str, str] = {**dict.fromkeys(SECRET_DETECTORS, "secret"),
                             **dict.fromkeys(PERSONAL_DETECTORS, "confidential")}


def marker(label: str, path: str, reason: str) -> dict[str, str]:
    """What a redacted value becomes. ``reason``: ``declared``, ``rule`` or ``detector:<name>``."""
    return {"redacted": label, "path": path, "reason": reason}


def is_marker(value: Any) -> bool:
    """A redaction marker (as ``marker`` makes it), wherever it was made."""
    return (type(value) is dict and len(value) == 3 and value.get("redacted") in _RANK
            and "path" in value and "reason" in value)


def marker_text(value: Mapping[str, Any]) -> str:
    """How a marker reads as text on every face: ``[redacted:secret]``."""
    return f"[redacted:{value['redacted']}]"


def marker_texts(value: Any) -> Any:
    """A redacted value with every marker in it replaced by its marker text."""
    if is_marker(value):
        return marker_text(value)
    if type(value) is dict:
        return {k: marker_texts(v) for k, v in value.items()}
    if type(value) is list or type(value) is tuple:
        return [marker_texts(v) for v in value]
    return value


def as_text(value: Any) -> str:
    """A redacted value as one line of text: a marker as its marker text, a string as itself,
    anything else as JSON whose markers read as marker text (never a Python dict's repr)."""
    if value is None:
        return ""
    if type(value) is str:
        return value
    if is_marker(value):
        return marker_text(value)
    return json.dumps(marker_texts(value), ensure_ascii=False, default=str)


_INLINE_MARKER = re.compile(r"\[redacted:(?:public|internal|confidential|restricted|secret)\]")


def holds_marker(value: Any) -> bool:
    """Whether a redacted value hides anything (its size would then give away what it hides)."""
    if is_marker(value):
        return True
    if type(value) is str:
        return "[redacted:" in value and _INLINE_MARKER.search(value) is not None
    if type(value) is dict:
        return any(holds_marker(v) for v in value.values())
    if type(value) is list or type(value) is tuple:
        return any(holds_marker(v) for v in value)
    return False


# -- detectors: secrets ----------------------------------------------------------------------

# A run of token characters long enough to hold any prefixed key or a high-entropy token: the
# gate before the prefix regex and the entropy test ("." too, for JWTs).
_LONG_RUN = re.compile(r"[A-Za-z0-9+/_=.-]{20,}")
_ENTROPY_RUN = re.compile(r"[A-Za-z0-9+/_=-]{20,}")
_PREFIXED = re.compile(r"""
    (?P<stripe_key>(?<![A-Za-z0-9])(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{10,})
  | (?P<openai_key>(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,})
  | (?P<aws_key>(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9]))
  | (?P<github_token>(?<![A-Za-z0-9])(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}))
  | (?P<slack_token>(?<![A-Za-z0-9])(?:xox[abposr]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,}))
  | (?P<slack_webhook>https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]{20,})
  | (?P<sendgrid_key>(?<![A-Za-z0-9])SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64})
  | (?P<twilio_key>(?<![A-Za-z0-9])SK[0-9a-fA-F]{32}(?![A-Za-z0-9]))
  | (?P<google_key>(?<![A-Za-z0-9])AIza[A-Za-z0-9_-]{30,})
  | (?P<gitlab_token>(?<![A-Za-z0-9])glpat-[A-Za-z0-9_-]{20,})
  | (?P<ledger_key>(?<![A-Za-z0-9])lpk_[A-Za-z0-9]+_[A-Za-z0-9_-]{16,})
  | (?P<jwt>(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*)
""", re.VERBOSE)
_PEM = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")
# scheme://user:password@host (the user may be empty: redis://:password@host).
_URL_PASSWORD = re.compile(r"://[^\s:@/?#]{0,256}:([^\s@/?#]{1,256})@[^\s@]")
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])bearer\s+([A-Za-z0-9._~+/-]{8,}=*)")
_BASIC = re.compile(r"(?i)(?<![A-Za-z0-9])basic\s+([A-Za-z0-9+/]{6,}={0,2})(?![A-Za-z0-9+/=])")
_ASSIGNMENT = re.compile(r"""(?ix)
    (?<![a-z0-9])(?:[a-z0-9]{1,32}[_-]){0,4}
    (?:password|passwd|passphrase|pwd|secret|token|credentials?
      |(?:api|access|secret|private|signing|encryption|master|client)[_-]?key|apikey
      |client[_-]?secret)
    ["']?\s{0,3}[:=]\s{0,3}["']?
    ([^\s"',;&}]{3,})
""")
_ASSIGNMENT_STEMS = ("pass", "pwd", "secret", "token", "key", "credential")
_PLACEHOLDERS = frozenset({"null", "none", "nil", "true", "false", "undefined", "empty",
                           "redacted", "[redacted]", "<redacted>", "hidden", "masked",
                           "required", "missing", "invalid", "expired", "unset", "n/a",
                           "changeme", "replaceme", "replace_me", "todo", "tbd"})
# Ids that look random but name objects, not credentials (Stripe-style ``ch_3MmlLr...``).
_ID_PREFIX = re.compile(
    r"(?:acct|ba|card|ch|cs|cus|dp|evt|fee|file|ii|il|in|inv|link|msg|ord|org|pi|pk_live|"
    r"pk_test|pm|po|price|prod|py|pyr|re|req|run|seti|si|src|sub|tok|tr|txn|usr)_[A-Za-z0-9]+")
_SEPARATORS = re.compile(r"[-_/+=]+")
_WORDISH = re.compile(r"[A-Z]?[a-z]{3,}|[0-9]{4}")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGIT_OR_SYMBOL = frozenset("0123456789+/-_")


def _entropy(token: str) -> float:
    """Shannon entropy in bits per character."""
    n = len(token)
    total = 0.0
    for ch in set(token):
        p = token.count(ch) / n
        total -= p * math.log2(p)
    return total


def _wordlike(segment: str) -> bool:
    n = len(segment)
    if n <= 3 or segment.isdigit() or (n <= 6 and segment.isupper()):
        return True
    return sum(len(w) for w in _WORDISH.findall(segment)) * 5 >= n * 3


def _looks_random(token: str) -> bool:
    """A high-entropy token: >= 20 characters, mixed case with digits or symbols, Shannon
    entropy >= ~4 bits/char, and mostly not made of words (identifiers and paths are)."""
    token = token.rstrip("=")
    n = len(token)
    if n < 20:
        return False
    chars = set(token)
    if chars.isdisjoint(_LOWER) or chars.isdisjoint(_UPPER) or chars.isdisjoint(
            _DIGIT_OR_SYMBOL):
        return False
    if _ID_PREFIX.fullmatch(token):
        return False
    # Random base62/64 has ~4.0 bits/char at 20 characters and ~4.6 at 40; the threshold grows
    # with the length up to 4.0 (a short token cannot reach log2(64) = 6 bits).
    if _entropy(token) < min(4.0, 0.8 * math.log2(n) + 0.2):
        return False
    # Split on separators, the characters in segments that are not word-like (words, numbers,
    # short acronyms) must be the majority: ReviewPullRequest2024 and feature/JIRA-12-add-SSO
    # are names, wJalrXUtnFEMI/K7MDENG/bPxRfiCY is not.
    random_chars = sum(len(s) for s in _SEPARATORS.split(token) if not _wordlike(s))
    return random_chars * 2 >= n


def _valid_bearer(token: str) -> bool:
    has_digit = any(ch.isdigit() for ch in token)
    return (has_digit and len(token) >= 8) or (len(token) >= 20 and not token.isalpha())


def _valid_basic(credentials: str) -> bool:
    try:
        decoded = base64.b64decode(credentials + "=" * (-len(credentials) % 4), validate=True)
    except (binascii.Error, ValueError):
        return False
    return b":" in decoded and decoded.isascii()


# A value that stands for a secret without being one: a template (``<token>``, ``${TOKEN}``,
# ``{{ secrets.X }}``, ``%KEY%``, ``$KEY``), an upper-case name (``YOUR_API_KEY``), a sample
# (``...EXAMPLE``, ``<your-token-here>``) or filler (``xxxx``, ``****``).
_TEMPLATE = re.compile(r"""(?x)
    <[^<>]{1,80}> | \$\{[^{}]{1,80}\} | \{\{[^{}]{1,80}\}\} | %[A-Za-z_][A-Za-z0-9_]{0,80}%
  | \$[A-Za-z_][A-Za-z0-9_]{0,80} | \[[^\[\]]{1,80}\]
  | [A-Z]{2,}(?:_[A-Z]{2,})+
""")
_SAMPLE = re.compile(r"(?i)example|placeholder|your[_-]|[_-]here\b|x{8,}|\*{4,}")


def placeholder(value: str) -> bool:
    """Does ``value`` stand for a secret rather than hold one?"""
    value = value.strip("\"'")
    if value.lower() in _PLACEHOLDERS or set(value) <= set("*xX.-_#<>0"):
        return True
    return _TEMPLATE.fullmatch(value) is not None or _SAMPLE.search(value) is not None


def _valid_assignment(value: str) -> bool:
    return len(value.strip("\"'")) >= 3 and not placeholder(value)


def _secret_kind(text: str) -> str | None:
    if len(text) < 7:
        return None
    has_run = _LONG_RUN.search(text) is not None
    if "PRIVATE KEY" in text and _PEM.search(text):
        return "private_key"
    if has_run:
        for match in _PREFIXED.finditer(text):
            if not _SAMPLE.search(match.group()):  # sk-xxxxxxxx..., AKIA...EXAMPLE
                return match.lastgroup
    if "://" in text and "@" in text:
        for match in _URL_PASSWORD.finditer(text):
            if not placeholder(match.group(1)):
                return "url_password"
    low = text.lower()
    if "bearer" in low:
        for match in _BEARER.finditer(text):
            if _valid_bearer(match.group(1)):
                return "bearer_token"
    if "basic" in low:
        for match in _BASIC.finditer(text):
            if _valid_basic(match.group(1)):
                return "basic_auth"
    if ("=" in text or ":" in text) and any(stem in low for stem in _ASSIGNMENT_STEMS):
        for match in _ASSIGNMENT.finditer(text):
            if _valid_assignment(match.group(1)):
                return "assignment"
    if has_run:
        for match in _ENTROPY_RUN.finditer(text):
            if _looks_random(match.group()) and not _content_not_key(text, match):
                return "high_entropy"
    return None


# What high-entropy runs also are without being credentials: a subresource-integrity hash, the
# payload of a data URI, base64 of plain prose (decoded and checked for secrets itself).
_SRI = re.compile(r"sha(?:256|384|512)-$")
_DATA_URI = re.compile(r"data:[\w.+-]{1,60}/[\w.+-]{1,60}(?:;[\w=.-]{1,40})*;base64,$")


def _content_not_key(text: str, match: re.Match[str]) -> bool:
    before = text[max(0, match.start() - 120):match.start()]
    if _SRI.search(before + match.group()[:7]) or _DATA_URI.search(before):
        return True
    token = match.group()
    if token[:7] in ("sha256-", "sha384-", "sha512-"):
        return True
    return _base64_prose(token)


def _base64_prose(token: str) -> bool:
    try:
        decoded = base64.b64decode(token + "=" * (-len(token) % 4), validate=True)
        plain = decoded.decode("ascii")
    except (binascii.Error, ValueError):
        return False
    if not plain.isprintable() or " " not in plain:
        return False
    letters = sum(ch.isalpha() or ch == " " for ch in plain)
    return letters * 10 >= len(plain) * 8 and _secret_kind(plain) is None


# A value whose key names a secret (``webhook_secret``, ``authToken``, ``signing_key``) is one
# when it has a credential's shape: a long hex or base64 run holding letters and digits. Alone,
# such a run is as likely a hash or an id (``request_id``, ``sha256``), so the name decides.
_NAME_WORDS = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")
_SECRET_NAMES = frozenset({"secret", "token", "password", "passwd", "pwd", "passphrase",
                           "credential", "credentials", "apikey"})
_SECRET_KEY_KINDS = frozenset({"api", "secret", "private", "signing", "encryption", "master",
                               "client", "access", "auth", "hmac", "webhook", "session"})
_KEYED_VALUE = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")


@lru_cache(maxsize=4096)
def names_secret(key: str) -> bool:
    """Does a JSON key name a credential (its last word, or ``<kind> key``)?"""
    words = [word.lower() for word in _NAME_WORDS.findall(key)]
    if not words:
        return False
    if words[-1] in _SECRET_NAMES:
        return True
    return words[-1] == "key" and len(words) > 1 and words[-2] in _SECRET_KEY_KINDS


def keyed_secret(key: Any, value: str) -> bool:
    """Is ``value``, found under ``key``, a credential by its name and shape?"""
    return (len(value) >= 16 and type(key) is str and names_secret(key)
            and _KEYED_VALUE.fullmatch(value) is not None
            and any(ch.isdigit() for ch in value) and any(ch.isalpha() for ch in value)
            and not placeholder(value))


_PEM_BLOCK = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----.*?"
                        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)", re.DOTALL)

Span = tuple[int, int, str]  # start, end, detector name


def _secret_spans(text: str) -> list[Span]:
    """Every secret ``_secret_kind`` would find in ``text``, with where it is."""
    spans: list[Span] = []
    if "PRIVATE KEY" in text:
        spans += [(m.start(), m.end(), "private_key") for m in _PEM_BLOCK.finditer(text)]
    spans += [(m.start(), m.end(), m.lastgroup or "") for m in _PREFIXED.finditer(text)
              if not _SAMPLE.search(m.group())]
    spans += [(m.start(1), m.end(1), "url_password") for m in _URL_PASSWORD.finditer(text)
              if not placeholder(m.group(1))]
    spans += [(m.start(1), m.end(1), "bearer_token") for m in _BEARER.finditer(text)
              if _valid_bearer(m.group(1))]
    spans += [(m.start(1), m.end(1), "basic_auth") for m in _BASIC.finditer(text)
              if _valid_basic(m.group(1))]
    spans += [(m.start(1), m.end(1), "assignment") for m in _ASSIGNMENT.finditer(text)
              if _valid_assignment(m.group(1))]
    spans += [(m.start(), m.end(), "high_entropy") for m in _ENTROPY_RUN.finditer(text)
              if _looks_random(m.group()) and not _content_not_key(text, m)]
    return spans


def _personal_spans(text: str) -> list[Span]:
    """Every piece of personal data ``_personal_kind`` would find in ``text``, with where."""
    spans: list[Span] = [(m.start(), m.end(), "email") for m in _EMAIL.finditer(text)
                         if _an_address(text, m)]
    iban_spans: list[tuple[int, int]] = []
    for match in _IBAN.finditer(text):
        if _valid_iban(match.group()):
            spans.append((match.start(), match.end(), "iban"))
        iban_spans.append(match.span())
    spans += [(m.start(), m.end(), "card") for m in _CARD.finditer(text)
              if _valid_card(m.group()) and not _inside(m.span(), iban_spans)]
    spans += [(start, end, "ssn") for start, end in _ssn_spans(text)]
    for match in _PHONE.finditer(text):
        low, high = _PHONE_DIGITS[match.lastgroup or "intl"]
        if (low <= len(_NOT_DIGIT.sub("", match.group())) <= high
                and not _inside(match.span(), iban_spans)):
            spans.append((match.start(), match.end(), "phone"))
    return spans


def redact_spans(text: str, personal: bool) -> str | None:
    """``text`` with each detector match replaced by its marker text; None when the matches
    cover the whole text (the caller makes one marker)."""
    spans = _secret_spans(text)
    if personal:
        # A URL's password and its host read like an address (pw@host): the secret covers it.
        spans += [p for p in _personal_spans(text)
                  if not any(p[0] < end and start < p[1] for start, end, _ in spans)]
    if not spans:
        return None
    spans.sort(key=lambda span: (span[0], -span[1]))
    merged: list[list[Any]] = []
    for start, end, kind in spans:
        rank = _SECRET if DETECTORS.get(kind) == "secret" else _CONFIDENTIAL
        if merged and start < merged[-1][1]:
            last = merged[-1]
            last[1], last[2] = max(last[1], end), max(last[2], rank)
        else:
            merged.append([start, end, rank, kind])
    head, tail = len(text) - len(text.lstrip()), len(text.rstrip())
    if merged[0][0] <= head and merged[-1][1] >= tail and len(merged) == 1:
        return None
    out, at = [], 0
    for start, end, rank, _kind in merged:
        out.append(text[at:start])
        out.append(f"[redacted:{LABELS[rank]}]")
        at = end
    out.append(text[at:])
    return "".join(out)


# -- detectors: personal data ------------------------------------------------------------------

_EMAIL = re.compile(
    r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-])")
# At least seven digits in a row (separators allowed), or the start of an IBAN: the gate before
# the card, IBAN and phone regexes.
_DIGIT_GATE = re.compile(r"\d[\d \t().-]{5,30}\d|[A-Z]{2}\d\d")
_NOT_DIGIT = re.compile(r"\D")
_CARD = re.compile(r"(?<![\w.+,/-])[1-9](?:[ -]?\d){12,18}(?![\w/-]|[.,]\d)")
_CARD_BRAND = re.compile(r"4|5[0-8]|2[2-7]|3[0456789]|6")  # Visa, MC, Amex, Diners, JCB, ...
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?"
                   r"(?![A-Za-z0-9])")
_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}
# Phones: international (+ and 8-15 digits, separators allowed), North American with separators
# (415-555-2671, (415) 555-2671, 415.555.2671) and trunk-0 national numbers with separators
# (020 7946 0958, 06 12 34 56 78, 030-1234567). Never bare digit strings, dates or amounts.
_PHONE = re.compile(r"""
    (?P<intl>(?<![\w+])\+[1-9](?:[ .-]?\(?\d{1,5}\)?){2,7}(?![\w/:-]|[.,]\d))
  | (?P<nanp>(?<![\w.+/:-])(?:\(\d{3}\)[ ]?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w/:-]|[.,]\d))
  | (?P<trunk>(?<![\w.+/:-])(?:\(0\d{1,4}\)[ ]?|0\d{1,4}[ -])\d{2,8}(?:[ -]\d{2,8}){0,4}
               (?![\w/:-]|[.,]\d))
""", re.VERBOSE)
_PHONE_DIGITS = {"intl": (8, 15), "nanp": (10, 10), "trunk": (9, 12)}
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _luhn(digits: str) -> bool:
    total = sum(int(d) for d in digits[-1::-2])
    total += sum(_LUHN_DOUBLE[int(d)] for d in digits[-2::-2])
    return total % 10 == 0


def _valid_card(text: str) -> bool:
    digits = _NOT_DIGIT.sub("", text)
    if not 13 <= len(digits) <= 19 or not _luhn(digits):
        return False
    # Grouped with spaces or dashes it is written as a card; a bare digit run must also start
    # like one (so epoch milliseconds and most order numbers are left alone).
    return len(digits) != len(text) or _CARD_BRAND.match(digits) is not None


def _valid_iban(text: str) -> bool:
    compact = text.replace(" ", "")
    expected = _IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) < expected:
        return False
    if len(compact) > expected:
        # Written in groups, the IBAN may be followed by another group ("... 9202 DONE"): cut
        # it at its length, if that falls between two groups.
        end = _nth_non_space_end(text, expected)
        if text[end:end + 1] != " ":
            return False
        compact = compact[:expected]
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _nth_non_space_end(text: str, n: int) -> int:
    seen = 0
    for i, ch in enumerate(text):
        if ch != " ":
            seen += 1
            if seen == n:
                return i + 1
    return len(text)


def _an_address(text: str, match: re.Match[str]) -> bool:
    """An e-mail address, not a URL's user (``https://user@host/...``) or a git remote
    (``git@github.com:org/repo.git``)."""
    if text[max(0, match.start() - 3):match.start()] == "://":
        return False
    after = text[match.end():match.end() + 2]
    return not (after[:1] == ":" and after[1:2] not in ("", " ", "\n"))


def _personal_kind(text: str) -> str | None:
    if len(text) < 6:
        return None
    if "@" in text and any(_an_address(text, m) for m in _EMAIL.finditer(text)):
        return "email"
    if _DIGIT_GATE.search(text) is None:
        return None
    # An IBAN's digit groups can look like a card or a phone number: IBAN-shaped spans are
    # judged by the IBAN check alone (a mod-97 failure is not a card by accident).
    iban_spans: list[tuple[int, int]] = []
    for match in _IBAN.finditer(text):
        if _valid_iban(match.group()):
            return "iban"
        iban_spans.append(match.span())
    for match in _CARD.finditer(text):
        if _valid_card(match.group()) and not _inside(match.span(), iban_spans):
            return "card"
    if _ssn_spans(text):
        return "ssn"
    for match in _PHONE.finditer(text):
        low, high = _PHONE_DIGITS[match.lastgroup or "intl"]
        if (low <= len(_NOT_DIGIT.sub("", match.group())) <= high
                and not _inside(match.span(), iban_spans)):
            return "phone"
    return None


# A US social security number: area 001-899 but 666, group 01-99, serial 0001-9999. Written
# with dashes or spaces; nine bare digits only when named (an order number looks the same).
_SSN = re.compile(r"(?<![\w.+/-])(?!000|666|9\d\d)\d{3}([- ])(?!00)\d{2}\1(?!0000)\d{4}"
                  r"(?![\w/-]|[.,]\d)")
_SSN_NAMED = re.compile(r"(?i)(?<![a-z])(?:ssn|social[ _-]security(?:[ _-]n(?:o|umber))?)"
                        r"\W{0,3}((?!000|666|9\d\d)\d{3}[- ]?(?!00)\d{2}[- ]?(?!0000)\d{4})"
                        r"(?![\w-])")


def _ssn_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in _SSN.finditer(text)]
    if "s" in text.lower():
        spans += [m.span(1) for m in _SSN_NAMED.finditer(text)]
    return spans


def _inside(span: tuple[int, int], spans: list[tuple[int, int]]) -> bool:
    return any(start <= span[0] and span[1] <= end for start, end in spans)


def detect(text: str, personal: bool = True) -> str | None:
    """The name of the first detector that fires on ``text`` (secrets before personal data), or
    None; ``personal=False`` runs the secret detectors only."""
    kind = _secret_kind(text)
    if kind is None and personal:
        kind = _personal_kind(text)
    return kind


def _card_number(number: int) -> bool:
    """An integer leaf that is a card number (JSON numbers are not strings, but can leak too)."""
    return 10**12 <= number < 10**19 and _valid_card(str(number))


# -- rules and declared labels -----------------------------------------------------------------

_PATH = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[(?:\d+|\*)\])*")
_PATH_SEGMENT = re.compile(r"\[(?:\d+|\*)\]|[^.\[\]]+")
_MARKER_REASON = re.compile(r"declared|rule|detector:[a-z0-9_]+")


def _segments(path: str) -> list[str] | None:
    """``input.items[*].card`` -> ``["input", "items", "[*]", "card"]``; None if malformed."""
    if not _PATH.fullmatch(path):
        return None
    return _PATH_SEGMENT.findall(path)


@dataclass(frozen=True)
class TenantRule:
    """A tenant's rule: a field-name glob (e.g. "*password*", "ssn", matched case-insensitively
    against the last key of a path) or a JSON path (starts with "$." e.g.
    "$.input.customer.email", "$.messages[*].content", matched against the full path; ``*`` as a
    segment matches any key), and the label it gives."""

    pattern: str
    label: str

    def __post_init__(self) -> None:
        if self.label not in _RANK:
            raise ValueError(f"{self.label!r} is not a label (one of {', '.join(LABELS)})")
        if self.is_path:
            segments = _segments(self.pattern[2:])
            if segments is None or any(s not in ("*", "[*]") and ("*" in s or "?" in s)
                                       for s in segments):
                raise ValueError(f"{self.pattern!r} is not a path such as $.input.customer.email"
                                 " or $.messages[*].content")
        elif not self.pattern or "." in self.pattern or "[" in self.pattern:
            raise ValueError(f"{self.pattern!r} is neither a field-name glob such as *password* "
                             "nor a JSON path starting with $.")

    @property
    def is_path(self) -> bool:
        return self.pattern.startswith("$.")


class _Node:
    """A node of the label trie: its children by segment (key, ``[n]``, ``[*]`` or ``*``) and
    the label given to the value at this path (-1: none)."""

    __slots__ = ("children", "rank", "reason")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.rank = -1
        self.reason = ""

    def add(self, segments: Sequence[str], rank: int, reason: str) -> None:
        node = self
        for segment in segments:
            child = node.children.get(segment)
            if child is None:
                child = node.children[segment] = _Node()
            node = child
        # The highest label wins; on a tie, the agent's declaration names the reason.
        if rank > node.rank or (rank == node.rank and reason == "declared"):
            node.rank, node.reason = rank, reason

    def copy(self) -> _Node:
        twin = _Node()
        twin.rank, twin.reason = self.rank, self.reason
        twin.children = {k: v.copy() for k, v in self.children.items()}
        return twin


_NO_NODES: tuple[_Node, ...] = ()
_CACHE_LIMIT = 4096
# What the detectors found in a string is remembered per Redactor (strings repeat: prompts,
# statuses, error messages...): up to this many strings of up to this many characters.
_KIND_CACHE_LIMIT = 16384
_KIND_CACHE_LENGTH = 256
_UNKNOWN = object()


def _copy(value: Any) -> Any:
    t = type(value)
    if t is dict:
        return {k: _copy(v) for k, v in value.items()}
    if t is list or t is tuple:
        return [_copy(v) for v in value]
    return value


class Redactor:
    """Redacts values at one level under one tenant's rules. Build it once and reuse it: the
    rules are compiled here, and label sets and field names are cached as they are met."""

    def __init__(self, level: str = "strict", rules: Sequence[TenantRule] = ()) -> None:
        if level not in LEVELS:
            raise ValueError(f"{level!r} is not a redaction level (one of {', '.join(LEVELS)})")
        self.level = level
        self.rules = tuple(rules)
        self._threshold = _THRESHOLD.get(level, len(LABELS))
        self._personal = level == "strict"
        self._path_rules: _Node | None = None
        globs: list[tuple[re.Pattern[str], int]] = []
        for rule in self.rules:
            rank = _RANK[rule.label]
            if rule.is_path:
                if self._path_rules is None:
                    self._path_rules = _Node()
                self._path_rules.add(_segments(rule.pattern[2:]) or [], rank, "rule")
            else:
                globs.append((re.compile(fnmatch.translate(rule.pattern), re.IGNORECASE), rank))
        self._globs = tuple(globs)
        self._key_ranks: dict[str, int] = {}
        self._tries: dict[tuple[tuple[str, str], ...], _Node | None] = {}
        self._kinds: dict[str, str | None] = {}

    # -- public API ----------------------------------------------------------------------------

    def redact(self, value: Any, root: str, labels: Mapping[str, str] | None = None) -> Any:
        """Return a redacted deep copy of `value` (any JSON value) whose path is `root` (e.g.
        "input", "output", "messages", "response", "error", "goal", "metadata", "body").
        `labels` are the labels the agent declared, as path -> label, e.g.
        {"input.customer.email": "confidential", "messages[0].content": "restricted",
        "input.items[*].card": "secret"}. Paths use dots for keys and [n] / [*] for list items."""
        if self.level == "none":
            return _copy(value)
        trie = self._trie(labels)
        nodes = _NO_NODES
        rank, reason = -1, ""
        if trie is not None:
            nodes = self._step(trie, root)
            for node in nodes:
                if node.rank > rank:
                    rank, reason = node.rank, node.reason
        if self._globs:
            key_rank = self._key_rank(root)
            if key_rank > rank:
                rank, reason = key_rank, "rule"
        return self._visit(value, root, nodes, rank, reason)

    def redact_fields(self, record: Mapping[str, Any], fields: Sequence[str],
                      labels: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A copy of `record` with each named field redacted (field name = root). Fields it does
        not name are copied shallowly; named fields it lacks are skipped."""
        out = dict(record)
        for field in fields:
            if field in out:
                out[field] = self.redact(out[field], field, labels)
        return out

    # -- labels ----------------------------------------------------------------------------------

    def _trie(self, labels: Mapping[str, str] | None) -> _Node | None:
        if not labels:
            return self._path_rules
        key = tuple(labels.items())
        try:
            return self._tries[key]
        except KeyError:
            pass
        except TypeError:  # an unhashable label: compile it, but do not cache it
            return self._compile_labels(key)
        trie = self._compile_labels(key)
        if len(self._tries) >= _CACHE_LIMIT:
            self._tries.clear()
        self._tries[key] = trie
        return trie

    def _compile_labels(self, labels: tuple[tuple[str, Any], ...]) -> _Node:
        trie = self._path_rules.copy() if self._path_rules is not None else _Node()
        for path, label in labels:
            segments = _segments(path) if isinstance(path, str) else None
            if segments is not None:
                # An unknown label fails closed: it counts as the most sensitive.
                rank = _RANK.get(label, _SECRET) if isinstance(label, str) else _SECRET
                trie.add(segments, rank, "declared")
        return trie

    def _key_rank(self, key: str) -> int:
        rank = self._key_ranks.get(key)
        if rank is None:
            rank = max((r for pattern, r in self._globs if pattern.match(key)), default=-1)
            if len(self._key_ranks) >= _CACHE_LIMIT:
                self._key_ranks.clear()
            self._key_ranks[key] = rank
        return rank

    @staticmethod
    def _step(node: _Node, segment: str) -> tuple[_Node, ...]:
        children = node.children
        exact = children.get(segment)
        wild = children.get("[*]" if segment[:1] == "[" else "*")
        if exact is None:
            return _NO_NODES if wild is None else (wild,)
        return (exact,) if wild is None else (exact, wild)

    # -- the walk --------------------------------------------------------------------------------

    def _visit(self, value: Any, path: str, nodes: tuple[_Node, ...], rank: int,
               reason: str) -> Any:
        if rank >= self._threshold:
            if type(value) is dict and _is_marker_at(value, path):
                return dict(value)
            if type(value) is str and rank < _SECRET:
                kind = _secret_kind(value)  # a secret in it raises the label
                if kind is not None:
                    rank, reason = _SECRET, f"detector:{kind}"
            return marker(LABELS[rank], path, reason)
        t = type(value)
        if t is str:
            kind = self._detect(value)
            if kind is None:
                return value
            inline = redact_spans(value, self._personal)
            if inline is not None:
                return inline
            kind_rank = _SECRET if DETECTORS[kind] == "secret" else _CONFIDENTIAL
            if kind_rank > rank:
                rank, reason = kind_rank, f"detector:{kind}"
            return marker(LABELS[rank], path, reason)
        if t is dict:
            if len(value) == 3 and _is_marker_at(value, path):
                return dict(value)
            if not nodes and not self._globs:
                return self._plain(value, path)
            out = {}
            keys = self._keys(value)
            for key, item in value.items():
                child_nodes = _NO_NODES
                child_rank, child_reason = -1, ""
                segment = key if type(key) is str else str(key)
                for node in nodes:
                    for child in self._step(node, segment):
                        child_nodes += (child,)
                        if child.rank > child_rank:
                            child_rank, child_reason = child.rank, child.reason
                if self._globs:
                    key_rank = self._key_rank(segment)
                    if key_rank > child_rank:
                        child_rank, child_reason = key_rank, "rule"
                shown = key if keys is None else keys[key]
                if (type(item) is str and child_rank < self._threshold
                        and self._detect(item) is None):
                    # what _visit returns, without making its path unless it is needed
                    out[shown] = (marker("secret", f"{path}.{segment}", "detector:keyed_secret")
                                  if keyed_secret(segment, item) else item)
                    continue
                out[shown] = self._visit(item, f"{path}.{segment}", child_nodes, child_rank,
                                         child_reason)
            return out
        if t is list or t is tuple:
            if not nodes and not self._globs:
                return [self._plain_leaf(v, path, i, True) for i, v in enumerate(value)]
            items = []
            for i, item in enumerate(value):
                child_nodes = _NO_NODES
                child_rank, child_reason = -1, ""
                for node in nodes:
                    for child in self._step(node, f"[{i}]"):
                        child_nodes += (child,)
                        if child.rank > child_rank:
                            child_rank, child_reason = child.rank, child.reason
                if (type(item) is str and child_rank < self._threshold
                        and self._detect(item) is None):
                    items.append(item)  # what _visit returns, without making its path
                    continue
                items.append(self._visit(item, f"{path}[{i}]", child_nodes, child_rank,
                                         child_reason))
            return items
        if t is int and self._personal and value >= 10**12 and _card_number(value):
            return marker(LABELS[max(rank, _CONFIDENTIAL)], path, "detector:card")
        return value

    def _keys(self, value: dict[Any, Any]) -> dict[Any, Any] | None:
        """How each key of ``value`` is shown, or None when every key is shown as it is. A key
        a detector fires on becomes ``[redacted:<label>#n]``: numbered, so keys stay unique
        and the structure is kept (a secret used as a key is still a secret)."""
        shown: dict[Any, Any] | None = None
        found = 0
        for key in value:
            if type(key) is not str or len(key) < 6:
                continue
            kind = self._detect(key)
            if kind is None:
                continue
            if shown is None:
                shown = {k: k for k in value}
            found += 1
            shown[key] = f"[redacted:{DETECTORS[kind]}#{found}]"
        return shown

    def _detect(self, text: str) -> str | None:
        """``detect(text, personal=<strict>)``, remembered for short strings."""
        kinds = self._kinds
        kind: Any = kinds.get(text, _UNKNOWN)
        if kind is _UNKNOWN:
            kind = _secret_kind(text)
            if kind is None and self._personal:
                kind = _personal_kind(text)
            if len(text) <= _KIND_CACHE_LENGTH:
                if len(kinds) >= _KIND_CACHE_LIMIT:
                    kinds.clear()
                kinds[text] = kind
        # the hottest line of redaction: a cast() here cost ~0.1 us a string (bench.redaction
        # +4-6%), so the checker is told instead
        return kind  # type: ignore[no-any-return]

    def _plain(self, value: Any, path: str) -> Any:
        """The walk where no declared label or rule can apply (the common case). Leaves are
        judged in their container's loop: a child's path is only built when it is needed (a
        marker, or a container to walk into)."""
        t = type(value)
        if t is dict:
            if len(value) == 3 and _is_marker_at(value, path):
                return dict(value)
            keys = self._keys(value)
            if keys is None:
                return {key: self._plain_leaf(item, path, key, False)
                        for key, item in value.items()}
            return {keys[key]: self._plain_leaf(item, path, key, False)
                    for key, item in value.items()}
        if t is list or t is tuple:
            return [self._plain_leaf(item, path, i, True) for i, item in enumerate(value)]
        return self._plain_leaf(value, path, _SELF, False)

    def _plain_leaf(self, value: Any, parent: str, key: Any, item: bool) -> Any:
        """``_plain(value, <parent's child path>)``, the path made only if it is used."""
        t = type(value)
        if t is str:
            if len(value) < 6:
                return value
            kind = self._detect(value)
            if kind is None:
                if not item and keyed_secret(key, value):
                    return marker("secret", _child(parent, key, item), "detector:keyed_secret")
                return value
            inline = redact_spans(value, self._personal)
            if inline is not None:
                return inline
            return marker(DETECTORS[kind], _child(parent, key, item), f"detector:{kind}")
        if t is dict or t is list or t is tuple:
            return self._plain(value, _child(parent, key, item))
        if t is int and self._personal and value >= 10**12 and _card_number(value):
            return marker("confidential", _child(parent, key, item), "detector:card")
        return value


_SELF = object()  # the key of ``_plain_leaf``'s value when it is the root, not a child


def _child(parent: str, key: Any, item: bool) -> str:
    if key is _SELF:
        return parent
    return f"{parent}[{key}]" if item else f"{parent}.{key}"


def _is_marker_at(value: dict[Any, Any], path: str) -> bool:
    """A marker this engine made for this very path (so redacting again keeps it as it is)."""
    reason = value.get("reason")
    return (len(value) == 3 and value.get("path") == path and value.get("redacted") in _RANK
            and type(reason) is str and _MARKER_REASON.fullmatch(reason) is not None)
