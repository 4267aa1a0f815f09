"""Who is acting, told apart in one place (core.actors): a person is named as one only when
they are one, a key or the portal never passes for a person, and four-eyes checks compare
people, never two absent ids."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser, User

from core.access_tokens import actor_in_local_mode
from core.actors import PORTAL_LABEL, ApiKeyPrincipal, is_person, key_of, label_of, person_of
from core.models import ApiKey, Tenant
from core.roles import Role
from core.services import issue_api_key


@pytest.fixture
def principals(acme: Tenant, alice: User) -> dict[str, Any]:
    key, _ = issue_api_key(acme, "agent", [Role.INGEST, Role.MANAGE_POLICIES])
    return {
        "person": alice,
        "person in local mode": actor_in_local_mode("alice"),
        "api key": ApiKeyPrincipal(ApiKey.objects.select_related("tenant").get(pk=key.pk)),
        "anonymous": AnonymousUser(),
        "the portal": None,
    }


def test_only_people_are_people(principals: dict[str, Any], alice: User) -> None:
    people = {name: person_of(who) for name, who in principals.items()}
    assert {name for name, person in people.items() if person is not None} == {
        "person", "person in local mode"}
    local = people["person in local mode"]
    assert local is not None
    assert local.pk == alice.pk


def test_four_eyes_never_matches_two_missing_ids(principals: dict[str, Any],
                                                 alice: User) -> None:
    for name, who in principals.items():
        assert not is_person(who, None), name
    assert is_person(principals["person in local mode"], alice.pk)
    assert not is_person(principals["api key"], alice.pk)


def test_a_key_is_its_key_and_labels_say_who(principals: dict[str, Any]) -> None:
    key = key_of(principals["api key"])
    assert key is not None
    assert key.name == "agent"
    assert key_of(principals["person"]) is None
    assert label_of(principals["api key"]) == "apikey:acme/agent"
    assert label_of(principals["person in local mode"]).startswith("alice via local mode")
    assert label_of(None) == PORTAL_LABEL
    assert label_of(None, default="") == ""


@pytest.fixture
def key_with_every_role(acme: Tenant) -> ApiKeyPrincipal:
    from runs.governance_log import setting_up

    with setting_up():
        key, _ = issue_api_key(acme, "everything", [role.value for role in Role])
    return ApiKeyPrincipal(ApiKey.objects.select_related("tenant").get(pk=key.pk))


def test_what_names_a_person_is_never_done_by_a_key(acme: Tenant, alice: User, bob: User,
                                                    key_with_every_role: ApiKeyPrincipal
                                                    ) -> None:
    """A vote, a legal hold and a key's confirmation name the person who did them: a key
    holding every role is refused at the service (before, the ORM raised a 500 on the
    assignment), and nothing is written."""
    from django.core.exceptions import PermissionDenied

    from approvals.models import Vote
    from approvals.services import decide_approval, request_approval
    from core.services import confirm_api_key
    from runs.governance_log import setting_up
    from runs.models import LegalHold
    from runs.retention import place_legal_hold

    approval = request_approval(acme, tool="refund_payment", action_class="write",
                                arguments={"amount": 5}, requested_by="agent", requester=bob)
    with setting_up():
        pending, _ = issue_api_key(acme, "sensitive", [Role.VIEW_UNREDACTED], by=alice)
    attempts = {
        "vote": lambda: decide_approval(approval, by=key_with_every_role, approve=True,
                                        justification="fine"),
        "legal hold": lambda: place_legal_hold(acme, by=key_with_every_role, reason="matter 9"),
        "key confirmation": lambda: confirm_api_key(pending, by=key_with_every_role),
    }
    refused = {}
    for what, attempt in attempts.items():
        with pytest.raises(PermissionDenied, match="person") as refusal:
            attempt()
        refused[what] = str(refusal.value)
    assert set(refused) == set(attempts)
    assert not Vote.objects.exists()
    assert not LegalHold.objects.exists()
    pending.refresh_from_db()
    assert pending.confirmed_at is None


# The apps whose functions act for someone; core.actors only reads an actor it is handed.
PORTAL_PACKAGES = ("core", "runs", "policies", "approvals", "operations", "incidents", "exports",
                   "ledger_portal")
ACTOR_ACCESSORS = "core.actors"


def _portal_modules() -> list[ModuleType]:
    names = []
    for package in PORTAL_PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, f"{package}.")]
    return [importlib.import_module(name) for name in names
            if ".migrations" not in name and name != ACTOR_ACCESSORS]


def _functions_of(module: ModuleType) -> Iterator[tuple[str, Callable[..., Any]]]:
    """The module's own functions and its own classes' methods."""
    for name, value in vars(module).items():
        if getattr(value, "__module__", None) != module.__name__:
            continue
        if inspect.isfunction(value):
            yield f"{module.__name__}.{name}", value
        elif inspect.isclass(value):
            for attr, member in vars(value).items():
                function = getattr(member, "__func__", member)  # staticmethod, classmethod
                if inspect.isfunction(function):
                    yield f"{module.__name__}.{name}.{attr}", function


def test_every_service_takes_who_acts_by_keyword() -> None:
    """``by`` is keyword-only wherever a portal function takes it (services, their helpers,
    the protocols between apps), so a call always says who acts and an argument cannot slip
    into its place."""
    takes_by, positional = [], []
    for module in _portal_modules():
        for name, function in _functions_of(module):
            parameter = inspect.signature(function).parameters.get("by")
            if parameter is None:
                continue
            takes_by.append(name)
            if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
                positional.append(name)
    assert len(takes_by) > 50  # the walk reached the services
    assert "approvals.services.decide_approval" in takes_by
    assert positional == [], f"{len(positional)} take by positionally: {positional}"
