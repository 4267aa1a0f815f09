"""A script can trust the ``ledger`` command's exit code: work that did not finish (a rollback
that failed or left side effects, a replay still queued when the wait ended or that failed, an
export that failed) is ``EXIT_INCOMPLETE`` (5), never 0; a diverged replay stays 4."""

from __future__ import annotations

import pytest

from core.cli_support import EXIT_INCOMPLETE, EXIT_OK
from ledger_portal.cli import main
from tests.replay.scenario import RUN_ID, recorded_run

pytestmark = pytest.mark.django_db


def test_a_replay_still_queued_when_the_wait_ends_is_incomplete_and_says_why(
        acme, alice, record, capsys, settings):
    record(acme, recorded_run())
    code = main(["--as", "alice", "replay", "--run-id", RUN_ID, "--tenant", "acme",
                 "--timeout", "1", "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_INCOMPLETE
    assert "still queued after 1 s" in err


def test_showing_a_queued_replay_is_not_a_failure(acme, alice, record, capsys):
    from operations.replay import start_replay
    from tests.replay.scenario import stored_run

    record(acme, recorded_run())
    replay = start_replay(stored_run(acme), by=alice)
    assert main(["--as", "alice", "replay", "--show", str(replay.pk)]) == EXIT_OK


def test_a_failed_export_is_incomplete_not_a_usage_error(acme, alice, capsys, settings,
                                                        tmp_path):
    blocked = tmp_path / "a-file-not-a-folder"
    blocked.write_text("the export store cannot be made here")
    settings.STORAGES = {**settings.STORAGES, "exports": {
        "BACKEND": "exports.storage.AtomicFileSystemStorage",
        "OPTIONS": {"location": str(blocked / "exports")}}}
    code = main(["--as", "alice", "export", "--tenant", "acme", "--from",
                 "2026-01-01T00:00:00Z", "--to", "2026-02-01T00:00:00Z",
                 "-o", str(tmp_path / "out.tar")])
    assert code == EXIT_INCOMPLETE, capsys.readouterr()
    assert " failed: " in capsys.readouterr().err
