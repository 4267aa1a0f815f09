"""A refusal is a page that says why and which role is needed, never a bare "403 Forbidden"."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from core.roles import Role
from core.services import grant_role

pytestmark = pytest.mark.django_db


@pytest.fixture
def reader(acme) -> User:
    user = User.objects.create_user("reader", is_staff=True)
    grant_role(user, Role.VIEW_LEDGER, acme)
    return user


def test_an_admin_page_beyond_your_roles_explains_the_refusal(reader, client):
    client.force_login(reader)
    answer = client.get("/admin/policies/policy/add/")
    assert answer.status_code == 403
    page = answer.content.decode()
    assert "You may not do this" in page
    assert "manage_policies" in page
    assert "Object permissions" in page
    assert 'href="/"' in page


def test_the_refusal_names_the_services_reason(acme, reader, client, make_run, record):
    run = make_run()
    record(acme, run)
    client.force_login(reader)
    answer = client.get(f"/runs/acme/{run['run_id']}/", {"redaction": "none"})
    assert answer.status_code == 403
    assert "needs the view_unredacted role" in answer.content.decode()
