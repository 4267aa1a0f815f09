"""Who runs ``ledger`` is proven: a personal access token (per user, hashed, scoped, expiring,
revocable, shown once) names its user, narrows their roles to its scopes, and is named on every
record the command writes. ``--as USER`` alone acts as nobody; local mode on the portal host is
recorded as such, with the OS user and the host."""

from __future__ import annotations

import getpass
import socket
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from core.access_tokens import (
    TokenRefused,
    issue_personal_token,
    revoke_personal_token,
)
from core.cli_support import EXIT_FORBIDDEN, EXIT_OK
from core.models import PersonalAccessToken
from ledger_portal.cli import main
from runs.models import Annotation, Run


@pytest.fixture
def run(acme, record, make_run) -> dict[str, Any]:
    recorded = make_run()
    record(acme, recorded)
    return recorded


@pytest.fixture
def no_local_mode(monkeypatch):
    monkeypatch.delenv("LEDGER_CLI_LOCAL", raising=False)


def annotate_with(run: dict[str, Any], *extra: str) -> int:
    return main([*extra, "annotate", run["run_id"], "--body", "retried the refund by hand"])


def last_note(run: dict[str, Any]) -> Annotation:
    return Annotation.objects.filter(run__run_id=run["run_id"]).order_by("-seq")[0]


def test_as_user_alone_acts_as_nobody(acme, alice, run, no_local_mode, capsys):
    with pytest.raises(SystemExit, match="personal access token"):
        annotate_with(run, "--as", "alice")
    assert not Annotation.objects.filter(body="retried the refund by hand").exists()


def test_a_token_acts_as_its_user_and_is_named_on_what_it_writes(
        acme, alice, run, no_local_mode, monkeypatch):
    token, raw = issue_personal_token(alice, "laptop", ["operate", "view_ledger"])
    monkeypatch.setenv("LEDGER_TOKEN", raw)
    assert annotate_with(run, "--as", "bob") == EXIT_OK  # --as is not who acts
    note = last_note(run)
    assert note.author == alice
    assert note.author_label == f"alice via token lpt_{token.prefix} (#{token.pk})"
    token.refresh_from_db()
    assert token.last_used_at is not None


def test_a_token_file_works_like_the_variable(acme, alice, run, no_local_mode, tmp_path):
    _, raw = issue_personal_token(alice, "ci", ["operate", "view_ledger"])
    path = tmp_path / "token"
    path.write_text(raw + "\n")
    assert annotate_with(run, "--token-file", str(path)) == EXIT_OK


def test_a_token_narrows_its_users_roles_to_its_scopes(acme, alice, run, no_local_mode,
                                                      monkeypatch):
    _, raw = issue_personal_token(alice, "read only", ["view_ledger"])
    monkeypatch.setenv("LEDGER_TOKEN", raw)
    assert annotate_with(run) == EXIT_FORBIDDEN  # alice operates; this token does not
    assert main(["show", run["run_id"]]) == EXIT_OK


@pytest.mark.parametrize("spoil", ["revoked", "expired", "altered", "inactive"])
def test_a_spoilt_token_acts_as_nobody(acme, alice, run, no_local_mode, monkeypatch, spoil):
    token, raw = issue_personal_token(alice, "laptop", ["operate"])
    if spoil == "revoked":
        revoke_personal_token(token, by=alice)
    elif spoil == "expired":
        PersonalAccessToken.objects.filter(pk=token.pk).update(
            expires_at=timezone.now() - timedelta(seconds=1))
    elif spoil == "altered":
        raw = raw[:-2] + ("AA" if not raw.endswith("AA") else "BB")
    else:
        alice.is_active = False
        alice.save()
    monkeypatch.setenv("LEDGER_TOKEN", raw)
    with pytest.raises(SystemExit):
        annotate_with(run)


def test_only_a_hash_is_kept_and_issuing_and_revoking_are_on_the_record(acme, alice):
    token, raw = issue_personal_token(alice, "laptop", ["operate"])
    assert raw not in (token.token_hash, token.prefix)
    assert raw.startswith("lpt_")
    revoke_personal_token(token, by=alice)
    events = list(Annotation.objects.filter(tenant=acme, data__token=token.pk).order_by(
        "seq").values_list("data__event", flat=True))
    assert events == ["token_issued", "token_revoked"]


def test_scopes_are_roles_the_user_holds(acme, bob):
    with pytest.raises(TokenRefused, match="holds no operate"):
        issue_personal_token(bob, "laptop", ["operate"])


def test_a_token_cannot_issue_tokens_and_nobody_issues_one_for_someone_else(acme, alice, bob):
    from core.access_tokens import actor_for_token

    _, raw = issue_personal_token(alice, "laptop", ["operate", "ingest"])
    with pytest.raises(TokenRefused, match="cannot issue"):
        issue_personal_token(alice, "more", ["operate"], by=actor_for_token(raw))
    with pytest.raises(TokenRefused, match="its own user"):
        issue_personal_token(bob, "for bob", ["ingest"], by=alice)


def test_local_mode_is_recorded_with_the_os_user_and_host(acme, alice, run, no_local_mode):
    assert annotate_with(run, "--local", "--as", "alice") == EXIT_OK
    note = last_note(run)
    assert note.author == alice
    assert note.author_label == (
        f"alice via local mode ({getpass.getuser()}@{socket.gethostname()})")
    assert Run.objects.get(run_id=run["run_id"]).last_seq == note.seq


def test_a_token_is_made_in_the_admin_and_shown_once(acme, alice, client):
    client.force_login(alice)
    expires = timezone.localtime() + timedelta(days=30)
    answer = client.post(reverse("admin:ledger_portal_personalaccesstoken_add"), {
        "name": "laptop", "scopes": ["operate"], "expires_at_0": expires.strftime("%Y-%m-%d"),
        "expires_at_1": expires.strftime("%H:%M:%S")})
    assert answer.status_code == 200, answer.content
    token = PersonalAccessToken.objects.get(user=alice)
    page = answer.content.decode()
    assert f"lpt_{token.prefix}_" in page
    assert "no-store" in answer["Cache-Control"]
    listing = client.get(reverse("admin:ledger_portal_personalaccesstoken_changelist"))
    assert f"lpt_{token.prefix}_" not in listing.content.decode()


def test_nobody_sees_anothers_tokens_in_the_admin(acme, alice, charlie, client):
    issue_personal_token(alice, "laptop", ["operate"])
    client.force_login(charlie)
    listing = client.get(reverse("admin:ledger_portal_personalaccesstoken_changelist"))
    assert "laptop" not in listing.content.decode()
