"""Values that stand for secrets, or look random without being credentials or addresses, are
not redacted: templates and placeholders, sample keys, subresource-integrity hashes, data URIs,
base64 of plain prose, document ids, URL users and git remotes. The target is no false
positive on this corpus; a real secret hidden the same way is still found."""

from __future__ import annotations

import base64

import pytest

from runs.redaction import Redactor, detect

BENIGN = [
    # templates and placeholders
    "YOUR_API_KEY", "${GITHUB_TOKEN}", "<token>", "xxxx", "xxxxxxxxxxxxxxxxxxxxxxxx",
    "Bearer <token>", "Bearer ${API_TOKEN}", "api_key=YOUR_API_KEY", "password=********",
    "token: <your-token-here>", "Authorization: Bearer {{ token }}", "{{ secrets.GITHUB_TOKEN }}",
    "$SLACK_BOT_TOKEN", "%API_KEY%", "<YOUR_SECRET>", "secret=changeme", "REPLACE_ME",
    "https://example.com/reset?token=YOUR_TOKEN", "postgres://user:<password>@db.internal/app",
    "redis://:${REDIS_PASSWORD}@cache:6379/0",
    # sample keys as documentation writes them
    "sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "sk_live_XXXXXXXXXXXXXXXXXXXXXXXX",
    "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "AKIAXXXXXXXXXXXXXXXX", "AKIAIOSFODNN7EXAMPLE",
    # random-looking content that is not a credential
    '<script src="app.js" integrity="sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/'
    'uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC"></script>',
    "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhf"
    "DwAChwGA60e6kgAAAABJRU5ErkJggg==",
    base64.b64encode(b"The quick brown fox jumps over the lazy dog, twice.").decode(),
    "doc_8f14e45fceea167a5a36dedd4bea2543", "DOC-2026-000123",
    "projects/my-project/locations/us/documents/4f1c2a",
    # addresses that are not e-mail addresses
    "https://user@example.com/repo.git", "git@github.com:org/repo.git",
    "ssh://git@gitlab.com/org/repo.git",
]

STILL_SECRET = [
    "api_key=Zx81kQp2mVw9RtL4sNd7", "postgres://app:Zx81kQp2mVw9RtL4@db.internal/app",
    # base64 hides a secret: decoded, it is checked like any text
    base64.b64encode(b"config: api_key=Zx81kQp2mVw9RtL4sNd7 for prod").decode(),
    "write to ada@example.com about the refund",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
]


@pytest.mark.parametrize("value", BENIGN)
def test_a_benign_value_is_not_detected(value: str) -> None:
    assert detect(value) is None


def test_no_benign_value_is_redacted_at_strict() -> None:
    redactor = Redactor("strict")
    redacted = redactor.redact({"values": BENIGN}, "input")
    assert redacted == {"values": BENIGN}


@pytest.mark.parametrize("value", STILL_SECRET)
def test_a_real_secret_written_alike_is_still_found(value: str) -> None:
    assert detect(value) is not None
