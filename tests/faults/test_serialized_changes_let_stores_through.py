"""The changes made one at a time per tenant (a legal hold, a retention batch, a digest, outage
mode, a published policy, an incident's edit) never stall an agent's store in that tenant.

Each of them locks the tenant's row to go one at a time. Every record an agent stores checks
its foreign key to that row with a KEY SHARE lock, which a plain ``FOR UPDATE`` blocks: while a
retention batch or a digest ran, every store of the tenant waited for it (PostgreSQL, real
sessions: the change is held open in one thread while the main one stores)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from core.services import grant_role, set_outage_mode
from incidents.services import edit_incident, open_incident
from policies.models import Policy
from policies.services import create_draft, publish_policy_version
from runs.integrity import seal_tenant_digest
from runs.models import LegalHold, Run
from runs.retention import apply_retention, place_legal_hold, release_legal_hold

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

LATER = timedelta(days=31)
Change = Callable[[], Any]


def _hold(acme: Any, alice: Any, **_: Any) -> Change:
    return lambda: place_legal_hold(acme, by=alice, reason="matter 9")


def _release(acme: Any, alice: Any, **_: Any) -> Change:
    hold = place_legal_hold(acme, by=alice, reason="matter 10")
    return lambda: release_legal_hold(LegalHold.objects.get(pk=hold.pk), by=alice)


def _retention(acme: Any, record: Any, make_run: Any, **_: Any) -> Change:
    acme.retention_days = 30
    acme.save()
    run = make_run(acme.slug)
    run["status"], run["ended_at"] = "succeeded", timezone.now().isoformat()
    record(acme, run)

    def remove() -> Any:
        report = apply_retention(acme, timezone.now() + LATER, months=False)
        assert report.removed_runs == 1, report
        return report
    return remove


def _seal(acme: Any, record: Any, make_run: Any, **_: Any) -> Change:
    record(acme, make_run(acme.slug))

    def seal() -> Any:
        assert seal_tenant_digest(acme) is not None
    return seal


def _outage(acme: Any, alice: Any, **_: Any) -> Change:
    return lambda: set_outage_mode(acme, by=alice, on=True, reason="INC-12: payments down")


def _publish(acme: Any, alice: Any, **_: Any) -> Change:
    dave = User.objects.create_user("dave", password="pw-for-tests-only", is_staff=True)
    grant_role(dave, "manage_policies", acme)
    draft = create_draft(Policy.objects.create(tenant=acme, name="tools"), by=alice,
                         change_note="allow all")
    return lambda: publish_policy_version(draft, by=dave)


def _incident(acme: Any, alice: Any, **_: Any) -> Change:
    incident = open_incident(acme, "refunds twice", by=alice)
    return lambda: edit_incident(incident, by=alice, title="refunds sent twice")


CHANGES = {"placing a legal hold": _hold, "releasing a legal hold": _release,
           "a retention batch": _retention, "sealing the digest": _seal,
           "switching outage mode": _outage, "publishing a policy version": _publish,
           "editing an incident": _incident}


@pytest.fixture
def held_open() -> Iterator[Callable[[Change], None]]:
    """Run a change in a thread of its own, its transaction kept open until the test ends."""
    done = threading.Event()
    threads: list[threading.Thread] = []

    def hold(change: Change) -> None:
        made = threading.Event()
        outcome: list[BaseException] = []

        def run() -> None:
            try:
                with transaction.atomic():
                    change()
                    made.set()
                    done.wait(timeout=60)
            except BaseException as error:  # asserted by the test
                outcome.append(error)
            finally:
                made.set()
                connection.close()
        threads.append(threading.Thread(target=run))
        threads[-1].start()
        assert made.wait(timeout=60)
        assert not outcome, outcome
    yield hold
    done.set()
    for thread in threads:
        thread.join(timeout=60)


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_an_agents_store_goes_through_while_the_change_is_being_made(
        change, acme, alice, record, make_run, held_open):
    made = change(acme=acme, alice=alice, record=record, make_run=make_run)
    held_open(made)
    run = make_run(acme.slug)
    with transaction.atomic():
        with connection.cursor() as cursor:
            # an agent would wait for the change's commit; here it gives up, saying which lock
            cursor.execute("SET LOCAL lock_timeout = '3s'")
        record(acme, run)
    assert Run.objects.filter(tenant=acme, run_id=run["run_id"]).exists()
