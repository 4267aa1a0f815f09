"""Following up divergences: a flagged step is open until someone with the operate role queues
it for fuzz testing, calls it expected (with a note) or marks it fixed; each decision is a
ledger annotation on the replayed run. The same workflow through the service, the replay page,
the API and ``ledger replay``; open divergences listed across the reader's tenants."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.core.exceptions import PermissionDenied
from django.urls import reverse

from core.services import grant_role
from ledger_portal.cli import main
from operations.divergences import FollowUpRefused, set_divergence_follow_up
from operations.models import ReplayStep
from operations.replay import start_replay
from runs.models import Annotation

from .scenario import RUN_ID, recorded_run, same_as_recorded, stored_run, walk, wire_tools

pytestmark = pytest.mark.django_db


def _diverging_replay(tenant: Any, by: Any, tool_server: Any, record: Any,
                      run_id: str = RUN_ID) -> Any:
    """A sandbox replay whose step 2 (refund_payment) diverges: ``$.state`` changed."""
    record(tenant, recorded_run(run_id))
    wire_tools(tenant, tool_server, refund_payment={"endpoint": tool_server.route(
        f"/refund-{tenant.slug}", same_as_recorded("c2", state="pending"))})
    return walk(start_replay(stored_run(tenant, run_id), by=by))


@pytest.fixture
def diverged(acme, alice, record, tool_server) -> Any:
    return _diverging_replay(acme, alice, tool_server, record)


def _step(replay: Any, seq: int = 2) -> ReplayStep:
    return ReplayStep.objects.get(replay=replay, seq=seq)


def _viewer(tenant: Any, name: str = "vera") -> Any:
    """A member who may read the ledger but not operate."""
    from django.contrib.auth.models import User

    user = User.objects.create_user(name, is_staff=True)
    grant_role(user, "view_ledger", tenant)
    return user


def test_a_flagged_step_opens_a_follow_up_and_the_others_have_none(diverged):
    steps = {s.seq: s for s in ReplayStep.objects.filter(replay=diverged)}
    assert steps[2].flagged
    assert steps[2].follow_up == "open"
    assert (steps[1].follow_up, steps[3].follow_up) == ("", "")


def test_queueing_a_divergence_for_fuzzing_records_who_when_and_annotates_the_run(
        diverged, alice):
    step = set_divergence_follow_up(_step(diverged), by=alice, state="queued_for_fuzzing",
                                    note="add to the refund corpus")
    step.refresh_from_db()
    assert (step.follow_up, step.follow_up_by, step.follow_up_note) == (
        "queued_for_fuzzing", alice, "add to the refund corpus")
    assert step.follow_up_at is not None
    note = Annotation.objects.filter(run__run_id=RUN_ID, annotation_kind="replay").order_by(
        "-seq").first()
    assert note is not None
    assert note.author == alice
    assert note.target_call_id == f"{RUN_ID}-c2"
    assert note.data == {"replay": diverged.pk, "event": "divergence_follow_up", "seq": 2,
                         "call_id": f"{RUN_ID}-c2", "tool": "refund_payment",
                         "previous": "open", "state": "queued_for_fuzzing",
                         "note": "add to the refund corpus"}
    assert f"replay {diverged.pk} step 2" in note.body
    assert "open -> queued_for_fuzzing" in note.body


def test_each_change_is_its_own_annotation(diverged, alice):
    set_divergence_follow_up(_step(diverged), by=alice, state="queued_for_fuzzing")
    set_divergence_follow_up(_step(diverged), by=alice, state="fixed", note="refund API pinned")
    events = [(a.data["previous"], a.data["state"]) for a in Annotation.objects.filter(
        run__run_id=RUN_ID, data__event="divergence_follow_up").order_by("seq")]
    assert events == [("open", "queued_for_fuzzing"), ("queued_for_fuzzing", "fixed")]


def test_expected_needs_a_note_saying_why(diverged, alice):
    with pytest.raises(FollowUpRefused, match="needs a note"):
        set_divergence_follow_up(_step(diverged), by=alice, state="expected", note="  ")
    step = set_divergence_follow_up(_step(diverged), by=alice, state="expected",
                                    note="refunds are pending until settled")
    assert step.follow_up == "expected"


def test_an_unflagged_step_is_refused_with_a_clear_message(diverged, alice):
    with pytest.raises(FollowUpRefused, match="did not diverge"):
        set_divergence_follow_up(_step(diverged, 1), by=alice, state="fixed")
    assert not Annotation.objects.filter(data__event="divergence_follow_up").exists()


def test_following_up_needs_the_operate_role(diverged, acme):
    with pytest.raises(PermissionDenied, match="operate role"):
        set_divergence_follow_up(_step(diverged), by=_viewer(acme), state="fixed")
    assert _step(diverged).follow_up == "open"


# The API


def test_the_api_records_a_follow_up_and_shows_it(acme, diverged, key_client):
    client = key_client(acme, ["operate", "view_ledger"])
    url = reverse("api:replay-step-follow-up", args=[diverged.pk, 2])
    response = client.post(url, {"state": "queued_for_fuzzing", "note": "corpus"},
                           format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["follow_up"]["state"] == "queued_for_fuzzing"
    assert body["follow_up"]["by"].startswith("apikey:acme/")
    assert body["differences"][0]["path"] == "$.state"
    assert client.get(url).json()["follow_up"]["note"] == "corpus"
    assert Annotation.objects.filter(data__event="divergence_follow_up").count() == 1


def test_the_api_refuses_without_the_operate_role(acme, diverged, key_client, user_client):
    url = reverse("api:replay-step-follow-up", args=[diverged.pk, 2])
    for client in (key_client(acme, ["view_ledger"]), user_client(_viewer(acme))):
        response = client.post(url, {"state": "fixed"}, format="json")
        assert response.status_code == 403
        assert "operate role" in response.json()["detail"]
    assert _step(diverged).follow_up == "open"


def test_the_api_explains_an_unflagged_step_and_a_missing_note(acme, diverged, key_client):
    client = key_client(acme, ["operate", "view_ledger"])
    unflagged = client.post(reverse("api:replay-step-follow-up", args=[diverged.pk, 1]),
                            {"state": "fixed"}, format="json")
    assert unflagged.status_code == 400
    assert "not flagged" in unflagged.json()["detail"]
    no_note = client.post(reverse("api:replay-step-follow-up", args=[diverged.pk, 2]),
                          {"state": "expected"}, format="json")
    assert no_note.status_code == 400
    assert "needs a note" in no_note.json()["detail"]


def test_another_tenants_step_is_404_everywhere(diverged, charlie, user_client, client,
                                                capsys):
    api = user_client(charlie).post(reverse("api:replay-step-follow-up", args=[diverged.pk, 2]),
                                    {"state": "fixed"}, format="json")
    assert api.status_code == 404
    client.force_login(charlie)
    for tenant in ("acme", "globex"):
        page = client.post(reverse("replay-step-follow-up", args=[tenant, diverged.pk, 2]),
                           {"state": "fixed"})
        assert page.status_code == 404
    assert main(["--as", "charlie", "replay", "--follow-up", f"{diverged.pk}:2",
                 "--state", "fixed"]) == 1
    assert _step(diverged).follow_up == "open"


# The list of divergences


@pytest.fixture
def two_tenants_diverged(acme, alice, globex, charlie, record, tool_server) -> dict[str, Any]:
    first = _diverging_replay(acme, alice, tool_server, record)
    second = walk(start_replay(stored_run(acme), by=alice))  # diverges the same way
    theirs = _diverging_replay(globex, charlie, tool_server, record, run_id="run-globex-1")
    set_divergence_follow_up(_step(first), by=alice, state="fixed", note="pinned")
    return {"fixed": first, "open": second, "globex": theirs}


def test_the_list_shows_only_open_divergences_of_the_users_tenants(
        two_tenants_diverged, alice, user_client):
    client = user_client(alice)
    rows = client.get(reverse("api:divergence-list")).json()["results"]
    assert [(r["tenant"], r["replay"], r["seq"]) for r in rows] == [
        ("acme", two_tenants_diverged["open"].pk, 2)]
    assert rows[0]["follow_up"]["state"] == "open"
    assert rows[0]["page"].endswith(f"/replays/{two_tenants_diverged['open'].pk}/#step-2")
    fixed = client.get(reverse("api:divergence-list"), {"state": "fixed"}).json()["results"]
    assert [r["replay"] for r in fixed] == [two_tenants_diverged["fixed"].pk]
    every = client.get(reverse("api:divergence-list"), {"state": "all"}).json()["results"]
    assert {r["tenant"] for r in every} == {"acme"}
    assert len(every) == 2
    assert client.get(reverse("api:divergence-list"), {"tool": "lookup_customer"}).json()[
        "results"] == []
    assert client.get(reverse("api:divergence-list"), {"tenant": "globex"}).json()[
        "results"] == []


def test_the_divergence_page_lists_open_ones_and_is_linked_from_the_replay_page(
        two_tenants_diverged, alice, client):
    client.force_login(alice)
    open_replay = two_tenants_diverged["open"]
    replay_page = client.get(reverse("replay-detail", args=["acme", open_replay.pk]))
    assert f'{reverse("divergence-list")}?tenant=acme' in replay_page.content.decode()
    page = client.get(reverse("divergence-list")).content.decode()
    assert f"replay {open_replay.pk}</a>" in page
    assert f"replay {two_tenants_diverged['fixed'].pk}</a>" not in page
    assert "run-globex-1" not in page
    assert "globex" not in page
    assert "$.state" in page
    fixed = client.get(reverse("divergence-list"), {"state": "fixed"}).content.decode()
    assert f"replay {two_tenants_diverged['fixed'].pk}</a>" in fixed


# The replay page


def test_the_replay_page_records_a_follow_up_from_its_form(diverged, alice, client):
    client.force_login(alice)
    page = client.get(reverse("replay-detail", args=["acme", diverged.pk])).content.decode()
    assert 'id="follow-up-form-2"' in page
    assert 'id="follow-up-form-1"' not in page  # not flagged
    response = client.post(reverse("replay-step-follow-up", args=["acme", diverged.pk, 2]),
                           {"state": "expected", "note": "pending until settled"})
    assert response.status_code == 302
    assert response["Location"].endswith("#step-2")
    page = client.get(reverse("replay-detail", args=["acme", diverged.pk])).content.decode()
    assert "follow-up-expected" in page
    assert "pending until settled" in page
    assert _step(diverged).follow_up_by == alice


def test_the_replay_page_says_why_a_follow_up_was_refused(diverged, alice, client):
    client.force_login(alice)
    response = client.post(reverse("replay-step-follow-up", args=["acme", diverged.pk, 2]),
                           {"state": "expected"}, follow=True)
    assert "needs a note" in response.content.decode()
    assert _step(diverged).follow_up == "open"


def test_the_replay_page_offers_no_form_and_refuses_without_the_operate_role(
        diverged, acme, client):
    client.force_login(_viewer(acme))
    page = client.get(reverse("replay-detail", args=["acme", diverged.pk])).content.decode()
    assert 'id="follow-up-2"' in page
    assert 'id="follow-up-form-2"' not in page
    response = client.post(reverse("replay-step-follow-up", args=["acme", diverged.pk, 2]),
                           {"state": "fixed"})
    assert response.status_code == 403
    assert _step(diverged).follow_up == "open"


# ``ledger replay``


def test_ledger_replay_follow_up_records_the_state(diverged, alice, capsys):
    code = main(["--as", "alice", "replay", "--follow-up", f"{diverged.pk}:2", "--state",
                 "queued_for_fuzzing", "--note", "corpus"])
    assert code == 0
    assert f"replay {diverged.pk} step 2" in capsys.readouterr().out
    assert _step(diverged).follow_up == "queued_for_fuzzing"


def test_ledger_replay_follow_up_refusals_and_their_exit_codes(diverged, acme, capsys):
    _viewer(acme)
    assert main(["--as", "vera", "replay", "--follow-up", f"{diverged.pk}:2",
                 "--state", "fixed"]) == 3
    assert "operate role" in capsys.readouterr().err
    assert main(["--as", "alice", "replay", "--follow-up", f"{diverged.pk}:1",
                 "--state", "fixed"]) == 2
    assert "not flagged" in capsys.readouterr().err
    assert main(["--as", "alice", "replay", "--follow-up", f"{diverged.pk}:2"]) == 2
    assert main(["--as", "alice", "replay", "--follow-up", f"{diverged.pk}:2",
                 "--state", "expected"]) == 2
    assert "needs a note" in capsys.readouterr().err
    assert _step(diverged).follow_up == "open"


def test_ledger_replay_lists_open_divergences(two_tenants_diverged, alice, capsys):
    assert main(["--as", "alice", "replay", "--divergences", "--json"]) == 0
    rows = orjson.loads(capsys.readouterr().out)
    assert [(r["tenant"], r["replay"]) for r in rows] == [
        ("acme", two_tenants_diverged["open"].pk)]
    assert main(["--as", "alice", "replay", "--divergences", "--state", "fixed"]) == 0
    out = capsys.readouterr().out
    assert f"acme replay {two_tenants_diverged['fixed'].pk} step 2 refund_payment" in out
    assert "$.state changed" in out


# The divergence report


def test_the_json_reports_carry_the_follow_up(diverged, alice, client, capsys):
    set_divergence_follow_up(_step(diverged), by=alice, state="expected",
                             note="pending until settled")
    client.force_login(alice)
    download = orjson.loads(client.get(
        reverse("replay-divergences", args=["acme", diverged.pk])).content)
    [step] = download["divergent_steps"]
    assert step["follow_up"]["state"] == "expected"
    assert step["follow_up"]["by"] == "alice"
    assert step["follow_up"]["note"] == "pending until settled"
    assert main(["--as", "alice", "replay", "--show", str(diverged.pk), "--json"]) == 4
    [shown] = orjson.loads(capsys.readouterr().out)["divergent_steps"]
    assert shown["follow_up"]["state"] == "expected"
    api = client.get(reverse("api:replay-detail", args=[diverged.pk])).json()
    assert api["steps"][0]["follow_up"] is None
    assert api["steps"][1]["follow_up"]["state"] == "expected"


def test_the_divergence_list_costs_the_same_queries_for_more_rows(diverged, alice, user_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = user_client(alice)

    def listing_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(reverse("api:divergence-list")).status_code == 200
        return len(queries)

    one = listing_queries()
    for _ in range(3):
        walk(start_replay(stored_run(diverged.tenant), by=alice))
    assert len(client.get(reverse("api:divergence-list")).json()["results"]) == 4
    assert listing_queries() == one
