"""Detectors beyond keys and cards: US social security numbers (with their validity rules),
SendGrid, Twilio and Slack credentials (webhook URLs included), and long hex or base64 values
whose key names a secret. Ids, hashes, timestamps and versions stay as they are, and the
identifier fields (``trigger_ref``, ``tool_call_ref``, ``idempotency_key``) pass the detectors
like any content."""

from __future__ import annotations

import pytest

from runs.redaction import Redactor, detect

SSNS = ["536-22-1234", "536 22 1234", "SSN: 536221234", "social security number 536-22-1234"]
INVALID_SSNS = ["000-22-1234", "666-22-1234", "912-22-1234",  # areas never issued
                "536-00-1234", "536-22-0000"]                 # an empty group or serial
NOT_SSNS = ["2026-12-05", "10-20-2030", "v536-22-1234", "INC-536-22-1234", "536-22-12345",
            "536221234", "order 536221234"]  # nine digits alone: an order number
SECRETS = {
    "sendgrid": "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",
    "twilio": "SK2a6e1f09e4c74f0c8a8c3d1b4e5f6a7b",
    "slack_webhook": "https://hooks.slack.com/services/T0123ABCD/B0456EFGH/"
                     "abcdefghijklmnopqrstuvwx",
    "slack_app": "xapp-1-A0123ABCD-4567890123-0a1b2c3d4e5f60718293a4b5c6d7e8f9",
}
KEYED = {
    "webhook_secret": "9f86d081884c7d659a2feaa0c55ad015",
    "auth_token": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "signing_key": "q83vEjRWeJq8Xq83vEjRWeJq8Xq83vEj",
    "client-secret": "u5Jx0Q8vK2mP1rT7wZ3yB6nD9hF4gL0s",
}
NOT_KEYED = {
    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "commit": "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3",
    "request_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "token_count": "12345678901234567890",
    "api_key": "YOUR_API_KEY_HERE_0000000000000",
    "secret_version": "2026-12-05T10:00:00Z",
    "token_type": "bearer-access-token",
}


@pytest.mark.parametrize("text", SSNS)
def test_a_social_security_number_is_personal_data(text):
    assert detect(text) == "ssn"
    redacted = Redactor("strict").redact({"note": text}, "input")
    assert "1234" not in str(redacted)


@pytest.mark.parametrize("text", INVALID_SSNS)
def test_a_number_no_ssn_can_be_is_not_one(text):
    assert detect(text) != "ssn"  # (one starting with 0 may still be a trunk phone number)


@pytest.mark.parametrize("text", NOT_SSNS)
def test_dates_versions_and_ids_shaped_alike_are_left_alone(text):
    assert detect(text) is None


def test_an_ssn_is_shown_at_standard_level_like_other_personal_data():
    assert Redactor("standard").redact({"note": SSNS[0]}, "input") == {"note": SSNS[0]}


@pytest.mark.parametrize(("kind", "value"), SECRETS.items())
def test_messaging_credentials_are_secrets_whole(kind, value):
    redacted = str(Redactor("strict").redact({"text": f"configured with {value} today"},
                                             "input"))
    assert "[redacted:secret]" in redacted
    for part in value.replace("/", ".").replace("-", ".").split("."):
        if len(part) >= 12:
            assert part not in redacted, (kind, part)


@pytest.mark.parametrize(("key", "value"), KEYED.items())
def test_a_hex_or_base64_value_under_a_secrets_name_is_a_secret(key, value):
    for level in ("strict", "standard"):
        redacted = Redactor(level).redact({"config": {key: value}}, "input")
        assert redacted["config"][key]["redacted"] == "secret", (level, redacted)


@pytest.mark.parametrize(("key", "value"), NOT_KEYED.items())
def test_ids_hashes_and_placeholders_under_other_names_stay(key, value):
    assert Redactor("strict").redact({key: value}, "input") == {key: value}


def test_identifier_fields_pass_the_detectors(acme, record, user_client, alice):
    secret = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
    record(acme, {
        "run_id": "ids-run", "agent_id": "a", "trigger_ref": f"alert:{secret}",
        "started_at": "2026-10-01T09:00:00Z", "status": "succeeded",
        "tool_calls": [{"call_id": "c1", "tool": "http", "action_class": "read",
                        "input": {}, "status": "succeeded", "tool_call_ref": secret,
                        "idempotency_key": f"key-{secret}",
                        "started_at": "2026-10-01T09:00:01Z"}]})
    api = user_client(alice)
    for url in ("/api/v1/runs/ids-run/", "/api/v1/runs/", "/api/v1/tool-calls/c1/"):
        answer = api.get(url)
        assert answer.status_code == 200
        assert secret not in answer.content.decode(), url
