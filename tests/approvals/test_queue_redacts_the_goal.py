"""The approval queue shows a run's goal through the redaction engine, like its arguments."""

from __future__ import annotations

from approvals.services import request_approval
from tests.runs.redaction_corpus import PLANTED


def test_a_secret_in_the_run_goal_never_reaches_the_queue(acme, alice, record, make_run,
                                                          client):
    secret = PLANTED[0]
    run = make_run()
    run["goal"] = f"rotate the key {secret} for billing"
    record(acme, run)
    request_approval(acme, tool="refund", action_class="write", arguments={"note": secret},
                     run_id=run["run_id"])
    client.force_login(alice)
    page = client.get("/approvals/").content.decode()
    assert run["run_id"] in page
    assert secret not in page
    assert "[redacted:" in page or "redacted" in page
