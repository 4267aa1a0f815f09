"""A deterministic corpus for redaction tests: planted secrets and personal data, clean values,
and near misses; and realistic records with the secrets planted in them.

- ``SECRETS``: >= 200 planted values (every detector, every key prefix family, Luhn-valid cards
  of several brands, IBANs of several countries, phones in several formats, ...), each with the
  detector expected to fire on it alone (``kind``) and ``secret``, the part that must never
  appear in a redacted output (the whole value, or the credential in ``password=...``).
- ``PLANTED``: every ``secret``, for leak tests: ``assert not any(s in body for s in PLANTED)``.
- ``CLEAN``: >= 200 values a redactor must leave alone (ids, hashes, timestamps, amounts, paths,
  URLs, ticket and order numbers, versions, sentences).
- ``NEAR_MISSES``: card-like numbers that fail the Luhn check and IBANs that fail mod-97.
- ``planted_tool_calls(n)``, ``planted_model_calls(n)``, ``planted_run(...)``: records in the
  ingestion format (as ``bench.generate`` makes them) carrying the planted values in nested
  inputs, outputs, errors, prompts and responses; ``n`` records cycle through all of ``SECRETS``
  (3 per record), so ``n >= len(SECRETS) // 3 + 1`` plants every one.

No Django, no database: importable from tests, benchmarks and scripts alike.
"""

from __future__ import annotations

import base64
import json
import random
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["CLEAN", "CONTEXTS", "NEAR_MISSES", "PLANTED", "SECRETS", "Planted",
           "planted_model_calls", "planted_run", "planted_tool_calls"]

PERSONAL_KINDS = frozenset({"email", "phone", "card", "iban", "ssn"})


@dataclass(frozen=True)
class Planted:
    value: str   # the string as planted
    kind: str    # the detector expected to fire on it (runs.redaction.DETECTORS)
    secret: str  # the part that must never leak (a substring of value)

    @property
    def label(self) -> str:
        return "confidential" if self.kind in PERSONAL_KINDS else "secret"


_rng = random.Random(20261001)
_B62 = string.ascii_letters + string.digits


def _b62(n: int) -> str:
    return "".join(_rng.choice(_B62) for _ in range(n))


def _alnum_upper(n: int) -> str:
    return "".join(_rng.choice(string.ascii_uppercase + string.digits) for _ in range(n))


def _hex(n: int) -> str:
    return "".join(_rng.choice("0123456789abcdef") for _ in range(n))


def _digits(n: int) -> str:
    return "".join(_rng.choice(string.digits) for _ in range(n))


def _urlsafe(nbytes: int) -> str:
    return base64.urlsafe_b64encode(_rng.randbytes(nbytes)).decode().rstrip("=")


def _b64(nbytes: int) -> str:
    return base64.b64encode(_rng.randbytes(nbytes)).decode()


def _b64url_json(obj: dict[str, Any]) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _same(values: list[str], kind: str) -> list[Planted]:
    return [Planted(v, kind, v) for v in values]


# -- secrets ------------------------------------------------------------------------------------

def _api_keys() -> list[Planted]:
    out: list[Planted] = []
    out += _same([f"{prefix}_{_b62(24 + i)}" for i, prefix in enumerate(
        ["sk_live", "sk_live", "sk_live", "sk_test", "sk_test", "sk_test", "rk_live", "rk_live",
         "rk_test", "sk_live", "rk_live", "sk_test"])], "stripe_key")
    out += _same([f"sk-{_b62(48)}" for _ in range(4)]
                 + [f"sk-proj-{_urlsafe(60)}" for _ in range(4)]
                 + [f"sk-svcacct-{_urlsafe(48)}", f"sk-admin-{_urlsafe(48)}"], "openai_key")
    out += _same([f"AKIA{_alnum_upper(16)}" for _ in range(6)]
                 + [f"ASIA{_alnum_upper(16)}" for _ in range(4)], "aws_key")
    out += _same([f"{p}_{_b62(36)}" for p in ("ghp", "ghp", "ghp", "gho", "gho", "ghs", "ghs",
                                               "ghu", "ghr")]
                 + [f"github_pat_11{_alnum_upper(20)}_{_b62(59)}" for _ in range(3)],
                 "github_token")
    out += _same([f"xoxb-{_digits(12)}-{_digits(13)}-{_b62(24)}" for _ in range(3)]
                 + [f"xoxp-{_digits(12)}-{_digits(12)}-{_digits(13)}-{_hex(32)}"
                    for _ in range(3)]
                 + [f"xoxa-2-{_digits(12)}-{_b62(30)}"], "slack_token")
    out += _same([f"AIza{_urlsafe(27)[:35]}" for _ in range(7)], "google_key")
    out += _same([f"glpat-{_urlsafe(15)}" for _ in range(7)], "gitlab_token")
    out += _same([f"lpk_{_hex(12)}_{_urlsafe(32)}" for _ in range(7)], "ledger_key")
    return out


def _jwts() -> list[Planted]:
    headers = [{"alg": "HS256", "typ": "JWT"}, {"alg": "RS256", "typ": "JWT", "kid": _hex(8)},
               {"alg": "ES256", "typ": "JWT"}, {"alg": "none"}]
    out = []
    for i in range(9):
        header = headers[i % len(headers)]
        payload = {"sub": f"user-{_digits(6)}", "iat": 1790000000 + i * 3600,
                   "scope": "payments:write", "tenant": "acme"}
        signature = "" if header["alg"] == "none" else _urlsafe(32 if i % 2 else 64)
        out.append(f"{_b64url_json(header)}.{_b64url_json(payload)}.{signature}")
    return _same(out, "jwt")


def _private_keys() -> list[Planted]:
    out = []
    for kind in ("RSA ", "EC ", "OPENSSH ", "", "ENCRYPTED ", "DSA ", "RSA ", ""):
        body = [_b64(48) for _ in range(5)]
        pem = (f"-----BEGIN {kind}PRIVATE KEY-----\n" + "\n".join(body)
               + f"\n-----END {kind}PRIVATE KEY-----\n")
        out.append(Planted(pem, "private_key", body[1]))
    pgp_body = [_b64(48) for _ in range(4)]
    out.append(Planted("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n" + "\n".join(pgp_body)
                       + "\n-----END PGP PRIVATE KEY BLOCK-----", "private_key", pgp_body[0]))
    return out


def _url_passwords() -> list[Planted]:
    urls = [
        "postgres://ledger:{pw}@db.internal:5432/ledger",
        "postgresql://app_rw:{pw}@10.0.3.17/billing?sslmode=require",
        "mysql://root:{pw}@mysql.prod.example.com:3306/crm",
        "redis://:{pw}@cache.internal:6379/0",
        "rediss://default:{pw}@redis-12345.example.cloud:12345",
        "amqp://worker:{pw}@rabbitmq.internal:5672/%2F",
        "mongodb+srv://reporting:{pw}@cluster0.ab1cd.mongodb.net/analytics",
        "https://deploy-bot:{pw}@git.example.com/infra/charts.git",
        "http://admin:{pw}@192.168.10.5:8080/manager/html",
        "ftp://backup:{pw}@ftp.example.org/exports/",
        "smtp://mailer:{pw}@smtp.example.com:587",
        "sftp://etl:{pw}@sftp.partner.example:22/incoming",
        "Connect with postgres://readonly:{pw}@replica.internal/ledger and retry",
    ]
    out = []
    for template in urls:
        password = _rng.choice(["S3cr3t", "Hunt3r", "Pa55w0rd", "Tr0ub4dor", "c0rrect-h0rse"])
        password += f"-{_b62(8)}"
        out.append(Planted(template.format(pw=password), "url_password", password))
    return out


def _bearer_and_basic() -> list[Planted]:
    out: list[Planted] = []
    for template in ("Bearer {t}", "Authorization: Bearer {t}", "authorization: bearer {t}",
                     "Bearer {t}", "curl -H 'Authorization: Bearer {t}' https://api.example.com",
                     "BEARER {t}"):
        token = _hex(32) if len(out) % 2 else f"{_hex(8)}.{_hex(24)}"
        out.append(Planted(template.format(t=token), "bearer_token", token))
    for user in ("admin", "svc-export", "ada", "ci-bot", "partner-api"):
        credentials = base64.b64encode(f"{user}:{_b62(14)}".encode()).decode()
        template = _rng.choice(["Authorization: Basic {c}", "Basic {c}", "basic {c}"])
        out.append(Planted(template.format(c=credentials), "basic_auth", credentials))
    return out


def _assignments() -> list[Planted]:
    templates = [
        "password={v}", "DB_PASSWORD={v}", "passwd: {v}", 'api_key="{v}"', "secret={v}",
        "client_secret={v}", "token={v}", "access_token={v}", "X-API-Key: {v}",
        '{{"password": "{v}"}}', "pwd={v}", "SMTP_PASSWORD={v}", "apikey: {v}",
        "refresh_token = {v}", "ENCRYPTION_KEY={v}", "private_key: {v}",
        "login with user=ops password: {v} please",
        "https://hooks.example.com/notify?channel=ops&token={v}",
    ]
    out = []
    for template in templates:
        value = _rng.choice(["hunter2", "changeme", "Winter2026!", "letmein", "qwerty-9"])
        value += _rng.choice(["", "-", "_", "#"]) + _digits(4)
        out.append(Planted(template.format(v=value), "assignment", value))
    return out


def _high_entropy() -> list[Planted]:
    values = [_urlsafe(n) for n in (24, 27, 30, 33, 36, 40, 45, 48)]
    values += [_b64(n) for n in (30, 32, 40, 48, 64)]
    values += [_b62(n) for n in (32, 36, 40, 44, 48, 56)]
    # AWS secret access keys (40 base64 characters), Azure storage keys (88 with padding).
    values += ["".join(_rng.choice(_B62 + "+/") for _ in range(40)) for _ in range(4)]
    values += [_b64(64) for _ in range(2)]
    return _same(values, "high_entropy")


# -- personal data --------------------------------------------------------------------------

def _emails() -> list[Planted]:
    values = [
        "ada.lovelace@example.com", "grace+billing@corp.example.org", "a.turing@math.example.ac.uk",
        "EDSGER.DIJKSTRA@EXAMPLE.NL", "barbara_liskov@mit.example.edu", "ken.t-2@bell-labs.example",
        "radia.perlman@example.io", "m.hamilton@apollo.example.gov", "linus@kernel.example.org",
        "support+ticket-4821@helpdesk.example.com", "jane.doe1987@mail.example.de",
        "o.brien@example.ie", "first.last@sub.domain.example.co", "x@example.fr",
        "finance-team@example.ch", "anna.kowalska@example.pl", "li.wei@example.cn",
        "noreply.customer.12345@example.net", "j.smith@example.co.uk", "carlos.gomez@example.es",
    ]
    return _same(values, "email")


def _phones() -> list[Planted]:
    values = [
        "+1-555-201-7788", "+14155552671", "+1 (415) 555-2671", "+44 20 7946 0958",
        "+44 7700 900123", "+33 6 12 34 56 78", "+33612345678", "+49 30 901820",
        "+49 151 23456789", "+41 44 668 18 00", "+31 20 794 3000", "+61 2 9374 4000",
        "+81 3-1234-5678", "+91 98765 43210", "+34 912 345 678",
        "(415) 555-2671", "415-555-2671", "415.555.2671", "212 555 0199",
        "020 7946 0958", "07700 900123", "06 12 34 56 78", "030 12345678", "0171 1234567",
        "044 668 18 00", "(030) 1234567",
    ]
    return _same(values, "phone")


def _luhn_complete(prefix: str, length: int) -> str:
    body = prefix + _digits(length - len(prefix) - 1)
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # these are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _card_format(number: str, style: int) -> str:
    if style == 0:
        return number
    sep = " " if style == 1 else "-"
    if len(number) == 15:  # Amex: 4-6-5
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i:i + 4] for i in range(0, len(number), 4))


CARD_BRANDS = [  # (brand, prefix, length)
    ("visa", "4", 16), ("visa", "4", 16), ("visa", "4", 13), ("visa", "4", 19),
    ("mastercard", "51", 16), ("mastercard", "53", 16), ("mastercard", "55", 16),
    ("mastercard", "2221", 16), ("mastercard", "2720", 16),
    ("amex", "34", 15), ("amex", "37", 15), ("amex", "37", 15),
    ("discover", "6011", 16), ("discover", "65", 16), ("discover", "644", 19),
    ("jcb", "3528", 16), ("jcb", "3589", 16),
    ("diners", "36", 14), ("diners", "300", 14),
    ("unionpay", "62", 19), ("maestro", "6759", 16),
]


def _cards() -> list[Planted]:
    values = [_card_format(_luhn_complete(prefix, length), i % 3)
              for i, (_, prefix, length) in enumerate(CARD_BRANDS)]
    # The well-known test numbers too.
    values += ["4111 1111 1111 1111", "5555-5555-5555-4444", "378282246310005",
               "6011111111111117"]
    return _same(values, "card")


IBAN_FORMATS = {  # country: BBAN layout (n: digit, a: letter, c: either)
    "DE": "nnnnnnnnnnnnnnnnnn", "GB": "aaaannnnnnnnnnnnnn", "FR": "nnnnnnnnnnccccccccccccc",
    "NL": "aaaannnnnnnnnn", "ES": "nnnnnnnnnnnnnnnnnnnn", "IT": "annnnnnnnnncccccccccccc",
    "BE": "nnnnnnnnnnnn", "CH": "nnnnncccccccccccc", "AT": "nnnnnnnnnnnnnnnn",
    "PL": "nnnnnnnnnnnnnnnnnnnnnnnn", "SE": "nnnnnnnnnnnnnnnnnnnn", "NO": "nnnnnnnnnnn",
    "IE": "aaaannnnnnnnnnnnnn", "PT": "nnnnnnnnnnnnnnnnnnnnn", "DK": "nnnnnnnnnnnnnn",
    "LU": "nnnccccccccccccc",
}


def _iban(country: str) -> str:
    pick = {"n": string.digits, "a": string.ascii_uppercase,
            "c": string.ascii_uppercase + string.digits}
    bban = "".join(_rng.choice(pick[c]) for c in IBAN_FORMATS[country])
    numeric = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - numeric % 97:02d}{bban}"


def _iban_format(iban: str, spaced: bool) -> str:
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) if spaced else iban


def _ibans() -> list[Planted]:
    out = [_iban_format(_iban(c), i % 2 == 0) for i, c in enumerate(IBAN_FORMATS)]
    out += ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "NL91ABNA0417164300",
            "FR1420041010050500013M02606"]
    return _same(out, "iban")


def _messaging_keys() -> list[Planted]:
    """SendGrid, Twilio and Slack credentials (fixed: the generator's sequence stays as it was
    for every value above)."""
    sendgrid = ["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",
                "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",
                "SG.0a1b2c3d4e5f6a7b8c9d0e.f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2",
                "SG.Zm9vYmFyYmF6cXV4MTIzNA.QmFyZm9vMTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3Bx",
                "SG.K9d8s7a6f5g4h3j2k1l0qw.Pq9Ow8Ie7Ur6Yt5Re4Wq3Az2Sx1Dc0Fv9Gb8Hn7Mj6Kl5"]
    twilio = ["SK2a6e1f09e4c74f0c8a8c3d1b4e5f6a7b", "SKf0e1d2c3b4a5968778695a4b3c2d1e0f",
              "SK0123456789abcdef0123456789abcdef", "SK9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b",
              "SKa1b2c3d4e5f60718293a4b5c6d7e8f90"]
    slack = [f"https://hooks.slack.com/services/T0{team}/B0{hook}/{token}"
             for team, hook, token in (("123ABCD", "456EFGH", "abcdefghijklmnopqrstuvwx"),
                                       ("9ZXY876", "54W3V21", "Q1w2E3r4T5y6U7i8O9p0AsDf"),
                                       ("AAAA111", "BBBB222", "zyxwvutsrqponmlkjihgfedc"),
                                       ("1A2B3C4", "5D6E7F8", "0123456789abcdefABCDEFgh"),
                                       ("QWERTY1", "ASDFGH2", "MnBvCxZlKjHgFdSaPoIuYtRe"))]
    return (_same(sendgrid, "sendgrid_key") + _same(twilio, "twilio_key")
            + _same(slack, "slack_webhook"))


def _ssns() -> list[Planted]:
    out = _same(["536-22-1234", "078-05-1121", "219-09-9998", "123 45 6780", "457-55-5462",
                 "001-01-0001", "899-99-9999"], "ssn")
    out += [Planted("SSN: 536221235", "ssn", "536221235"),
            Planted("social security number 457555463", "ssn", "457555463")]
    return out


SECRETS: list[Planted] = (_api_keys() + _jwts() + _private_keys() + _url_passwords()
                          + _bearer_and_basic() + _assignments() + _high_entropy() + _emails()
                          + _phones() + _cards() + _ibans() + _messaging_keys() + _ssns())
PLANTED: list[str] = [p.secret for p in SECRETS]

# Ways a value is written into a longer string; the detectors must still find it.
CONTEXTS: list[str] = [
    "{}", "Customer wrote: {}", "please use {} today", "({})", "[{}]", "note:\n{}\n",
    "value {} (copied from the CRM)",
]

# -- near misses ----------------------------------------------------------------------------


def _break_luhn(card: str) -> str:
    last = card[-1]
    return card[:-1] + str((int(last) + 5) % 10)


def _break_iban(iban: str) -> str:
    compact = iban.replace(" ", "")
    check = (int(compact[2:4]) + 1) % 100
    broken = f"{compact[:2]}{check:02d}{compact[4:]}"
    return _iban_format(broken, " " in iban)


NEAR_MISSES: list[str] = (
    [_break_luhn(p.value) for p in SECRETS if p.kind == "card"]
    + [_break_iban(p.value) for p in SECRETS if p.kind == "iban"]
    + ["4111 1111 1111 1112", "1234 5678 9012 3456", "DE00 3704 0044 0532 0130 00"]
)

# -- clean values ---------------------------------------------------------------------------


def _clean() -> list[str]:
    rng = random.Random(7)
    values: list[str] = []
    values += [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(12)]
    values += [str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper() for _ in range(3)]
    values += [f"{rng.getrandbits(n * 4):0{n}x}" for n in (8, 12, 16, 16, 20, 24, 24, 32, 32, 32)]
    values += [f"{rng.getrandbits(160):040x}" for _ in range(4)]   # git commit SHAs
    values += [f"{rng.getrandbits(256):064x}" for _ in range(4)]   # sha256 digests
    values += [f"sha256:{rng.getrandbits(256):064x}"]
    start = datetime(2026, 10, 1, 8, 30, tzinfo=UTC)
    for i in range(10):
        moment = start + timedelta(seconds=rng.randint(0, 90 * 86400), microseconds=i * 1234)
        values.append(moment.isoformat().replace("+00:00", "Z"))
    values += ["2026-10-01", "2026-10-01 12:30:00", "01/10/2026", "10/01/2026 09:15", "12:30:00",
               "2026-10-01T12:30:00+02:00", "Wed, 01 Oct 2026 12:30:00 GMT", "2026-W40",
               "1790000000", "1790000000000", "1730419200.123"]
    values += ["1234.50", "€1,234.56", "$ 99.99", "-42.00 EUR", "1 234,56 €", "12500",
               "0.075", "99.9%", "3,250,000", "USD 1,000,000.00", "£12.40", "CHF 250.-",
               "1e-6", "-17", "42"]
    values += [
        "Triage ticket 4821: classify, answer or escalate",
        "Resolve refund request on ticket 17",
        "Reconcile invoices for account 88412",
        "Investigate alert 2231: high error rate on checkout",
        "Restart degraded workers after alert 2231",
        "Prepare quarterly usage report 12",
        "Review pull request #481",
        "You are a careful operations agent.",
        "Plan step 3: use tools.",
        "upstream did not answer within 30s",
        "503 Service Unavailable",
        "token lacks scope write:payments",
        "Customer asked to reset their password after the outage.",
        "Use a bearer token for the internal API, never basic auth.",
        "Basic plan customers get 3 seats.",
        "The secret to fast exports is batching 1,000 rows at a time.",
        "Refund of 42.50 EUR issued on 2026-10-02 for order ORD-2026-000123.",
        "Escalated to tier 2 (see INC-2026-0042).",
        "Retrying in 250 ms (attempt 2 of 3).",
        "Scaled checkout-api from 4 to 6 replicas at 14:05 UTC.",
        "Deleted 1,204 stale records from usage_2026_q3.",
        "Key rotation is scheduled for Friday.",
        "Call back within 24 hours; SLA is 99.95% uptime.",
        "The report covers 10 regions and 3 currencies.",
        "Merged PR #482 into main at commit 9f2c1e7.",
        "Latency p95 rose to 1,850 ms between 10:00 and 10:15.",
        "Status: open. Assignee: none. Priority: P2.",
        "Customer is on the enterprise tier since 2024.",
    ]
    values += ["/var/log/nginx/access.log", "/srv/app/config/settings.yaml",
               "C:\\Users\\ada\\report.xlsx", "src/components/UserProfile2/index.tsx",
               "reports/Quarterly/2026-Q3/Summary.pdf",
               "./scripts/migrate_2026_10_01.py", "~/.config/ledger/config.toml",
               "s3://reports-eu/quarterly", "usage-17.csv", "gs://ml-artifacts/models/v3/model.pt",
               "/api/v2/Customers/12345/Invoices",
               "projects/ledger/locations/europe-west1/Jobs/Export42"]
    values += ["https://example.com/reports/Q3-2026/usage?page=2&sort=desc",
               "https://api.example.com/v1/charges/ch_123",
               "http://localhost:8000/api/v1/runs/?status=failed",
               "https://github.com/acme/ledger-portal/pull/482",
               "https://medium.com/@ada/why-ledgers-matter-1a2b3c",
               "https://docs.example.com/guide#section-4.2",
               "postgres://db.internal:5432/ledger", "redis://cache.internal:6379/0",
               "mailto:", "ftp://ftp.example.org/pub/",
               "https://status.example.com/incidents/2026-10-01"]
    values += ["T-123", "T-4821", "REQ-42", "REQ-100045", "ALERT-2231", "INC-2026-0042",
               "JIRA-1234", "PR #481", "CASE-00012345", "BUG-77"]
    values += ["ORD-2026-000123", "PO-884213", "INV-2026-10-0042", "order 558812",
               "SO-2026-11-00042", "#100-2345-6789", "RMA-44120", "2026-000123-7"]
    values += ["1.4.2", "v2.10.0-rc.1", "3.11.7", "2026.10.1", "1.0.0+build.20261001",
               "10.20.30.40", "v1.2", "5.2.7"]
    values += ["192.168.1.10", "10.0.0.1:8080", "2001:db8::1", "172.16.254.1/24"]
    values += ["checkout-api-7d9f8b6c5-x2x4q", "billing-worker-5c6d7f8b9-abcde",
               "ledger-portal-web-0", "kube-system", "ip-10-0-3-17.eu-west-1.compute.internal"]
    values += ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "01J9ZKX7Q3M2T8V4W6Y0B1C5D7",
               "01HGW2N7EHJ0ZB8Y6C3K4R5T9V"]
    values += ["ch_3MmlLrLkdIwHu7ix0snN0B15", "pi_3MtwBwLkdIwHu7ix28a3tqPa", "cus_NffrFeUfNV2Hib",
               "pm_1MqLiJLkdIwHu7ixUEgbFdYF", "evt_1NG8Du2eZvKYlo2CUI79vXWy", "pk_live_51H8x2Q"]
    values += ["m-482193765", "pay_88412093", "re_55120931", "a1b2c3d4e5f60718", "R-482193",
               "status:open assignee:none page:3", "idem-acme-run-0000042-t1.2",
               "acme-run-0000042-t1.2-r2", "support-triage", "billing-reconciler"]
    values += ["gpt-4.1", "claude-sonnet-4", "gemini-2.5-pro", "gpt-4o-mini-2024-07-18",
               "claude-3-5-sonnet-20241022", "text-embedding-3-large"]
    values += ["ReviewPullRequest2024Branch", "fix-1234-UpdateCheckoutFlow", "GetCustomerByEmailV2",
               "MyCompany-Prod-Backup-2026-10-01", "TestRedactionEngine_v2_Perf",
               "feature/JIRA-1234-add-SSO", "DataExporterQ4Run2026", "HTTPServerError503Retry",
               "X-Request-Id-2026ABC", "AgentExecutionLedgerV2Beta",
               "arn:aws:iam::123456789012:role/AgentRunner", "eu-west-1", "us-central1-a"]
    values += ["250ms", "1h30m", "P1DT2H", "30s", "HTTP 429", "429 Too Many Requests", "EUR",
               "pro", "enterprise", "succeeded", "Ada Lovelace", "Grace Hopper", "ISO-8601",
               "utf-8", "application/json", "en-GB", "Europe/Paris", "#ff8800", "x" * 40,
               "N/A", "", "   ", "true", "null"]
    values += ["1234567", "86400", "3600000", "12345678901", "2026100112", "1,234,567",
               "12 345", "3.14159", "0.000123", "007"]
    return values


CLEAN: list[str] = _clean()

# -- planted records --------------------------------------------------------------------------

_EPOCH = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def _ts(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _slots(index: int, count: int) -> list[str]:
    """``count`` planted values for record ``index``, each inside one of the CONTEXTS;
    consecutive records walk through all of SECRETS."""
    out = []
    for j in range(count):
        k = index * count + j
        planted = SECRETS[k % len(SECRETS)]
        out.append(CONTEXTS[(k // len(SECRETS) + j) % len(CONTEXTS)].format(planted.value))
    return out


def _tool_io(i: int) -> tuple[str, str, dict[str, Any], Any, Any, dict[str, str]]:
    """(tool, action class, input, output, error, classifications) for planted record i."""
    s1, s2, s3 = _slots(i, 3)
    shape = i % 6
    if shape == 0:
        return ("http_request", "exfil",
                {"method": "POST", "url": "https://api.example.com/v1/charges",
                 "headers": {"Content-Type": "application/json", "X-Trace": s1},
                 "body": {"customer": {"contact": s2, "tier": "pro"}, "amount_cents": 1250}},
                {"status": 200, "json": {"items": [{"id": f"R-{i}", "value": s3}]}}, None, {})
    if shape == 1:
        return ("query_ledger_db", "read",
                {"dsn": s1, "query": "SELECT id, contact FROM customers WHERE tier = 'pro'"},
                {"rows": [{"id": 1, "contact": s2}, {"id": 2, "contact": "n/a"},
                          {"id": 3, "notes": [s3]}], "row_count": 3}, None,
                {"input.dsn": "secret"})
    if shape == 2:
        return ("send_email", "exfil",
                {"to": s1, "subject": "Your refund", "body": f"Hello,\n{s2}\nThanks, Support"},
                None, {"type": "SMTPError", "message": f"rejected: {s3}"}, {})
    if shape == 3:
        return ("read_file", "read", {"path": "/srv/app/.env", "max_bytes": 4096},
                {"content": s1, "lines": [s2, "DEBUG=false", {"raw": s3}]}, None,
                {"output.content": "restricted"})
    if shape == 4:
        return ("update_ticket", "write",
                {"ticket": f"T-{i}", "comment": s1,
                 "fields": {"notes": [{"text": s2, "author": "agent"}]}},
                {"ok": True, "echo": {"deep": {"deeper": [[s3]]}}}, None,
                {"input.fields.notes[*].text": "confidential"})
    return ("get_customer", "read", {"customer_id": f"cus_{i:06d}", "include": ["contact"]},
            {"customer": {"name": "Ada Lovelace", "email": s1, "phone": s2,
                          "payment": {"method": s3, "brand": "visa"}}}, None,
            {"output.customer.email": "confidential", "output.customer.phone": "confidential"})


def planted_tool_calls(n: int, run_id: str = "leak-run", step_id: str | None = None
                       ) -> list[dict[str, Any]]:
    """``n`` tool calls in the ingestion format, three planted values each (in nested inputs,
    outputs or errors); ``n >= len(SECRETS) // 3 + 1`` plants every value of SECRETS."""
    calls = []
    for i in range(n):
        tool, action, tool_input, output, error, labels = _tool_io(i)
        started = _EPOCH + timedelta(seconds=7 * i)
        failed = error is not None
        calls.append({
            "call_id": f"{run_id}-t{i + 1}", "step_id": step_id, "tool": tool,
            "action_class": action, "input": tool_input, "output": output,
            "status": "failed" if failed else "succeeded", "error": error, "attempt": 1,
            "retry_of": None, "started_at": _ts(started),
            "ended_at": _ts(started + timedelta(milliseconds=350)),
            "idempotency_key": f"idem-{run_id}-t{i + 1}" if action != "read" else "",
            "supports_rollback": action == "write", "classifications": labels})
    return calls


def planted_model_calls(n: int, run_id: str = "leak-run", step_id: str | None = None
                        ) -> list[dict[str, Any]]:
    """``n`` model calls in the ingestion format, three planted values each (in the prompt
    messages, some as content parts, and in the response)."""
    calls = []
    for i in range(n):
        s1, s2, s3 = _slots(i + 7919, 3)  # a different walk through SECRETS than tool calls
        started = _EPOCH + timedelta(seconds=11 * i)
        tool_content: Any = s2 if i % 2 else [{"type": "text", "text": s2}]
        calls.append({
            "call_id": f"{run_id}-m{i + 1}", "step_id": step_id,
            "provider": ["openai", "anthropic", "google"][i % 3],
            "model": ["gpt-4.1", "claude-sonnet-4", "gemini-2.5-pro"][i % 3],
            "messages": [{"role": "system", "content": "You are a careful operations agent."},
                         {"role": "user", "content": f"Resolve ticket T-{i}. Context: {s1}"},
                         {"role": "tool", "content": tool_content}],
            "response": {"role": "assistant", "content": f"I found this in the record: {s3}"},
            "usage": {"input_tokens": 1200 + i, "output_tokens": 80},
            "latency_ms": 900, "started_at": _ts(started),
            "ended_at": _ts(started + timedelta(milliseconds=900)),
            "classifications": {"messages[0].content": "public"} if i % 4 == 0 else {}})
    return calls


def planted_run(run_id: str = "leak-run", tool_calls: int | None = None,
                model_calls: int = 20) -> dict[str, Any]:
    """One run (ingestion format, one step) with every planted value somewhere in its tool
    calls, plus model calls, and planted values in its goal and metadata."""
    n_tools = tool_calls if tool_calls is not None else len(SECRETS) // 3 + 1
    goal_secret, meta_secret = SECRETS[0].value, SECRETS[-1].value
    return {
        "run_id": run_id, "agent_id": "support-triage", "agent_name": "Support Triage",
        "goal": f"Rotate the leaked key {goal_secret} for ticket T-1",
        "trigger_ref": "REQ-1", "status": "succeeded", "started_at": _ts(_EPOCH),
        "ended_at": _ts(_EPOCH + timedelta(hours=2)),
        "metadata": {"framework": "langgraph", "version": "1.4.2", "note": meta_secret},
        "steps": [{"step_id": "s1", "index": 1, "title": "Investigate", "status": "done",
                   "started_at": _ts(_EPOCH), "ended_at": _ts(_EPOCH + timedelta(hours=2))}],
        "model_calls": planted_model_calls(model_calls, run_id, step_id="s1"),
        "tool_calls": planted_tool_calls(n_tools, run_id, step_id="s1"),
    }
