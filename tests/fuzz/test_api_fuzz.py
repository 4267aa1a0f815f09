"""Fuzzing the API from its own OpenAPI schema (schemathesis): every operation, with the key
of every scope and a logged-in person, bounded in examples. No answer is a 5xx, and every
answer the schema documents matches it."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
import schemathesis
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from core.roles import Role

pytestmark = pytest.mark.django_db(transaction=True)

SCOPES = [Role.INGEST, Role.VIEW_LEDGER, Role.OPERATE, Role.APPROVE, Role.MANAGE_POLICIES,
          Role.EXPORT]
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


# Built at collection (Django is set up by then; no database needed for the schema).
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))


@pytest.fixture
def callers(acme, alice, record, make_run, api_key) -> list[dict[str, Any]]:
    """How each caller authenticates: a key of every scope, one key per scope, a person."""
    record(acme, make_run())
    keys = [api_key(acme, [str(s) for s in SCOPES])] + [api_key(acme, [str(s)])
                                                          for s in SCOPES]
    browser = Client()
    browser.force_login(alice)
    return ([{"headers": {"Authorization": f"Bearer {key}"}} for key in keys]
            + [{"cookies": {"sessionid": browser.cookies["sessionid"].value}}])


# Positive and negative data, a few examples per operation: bounded, repeatable.
@schema.parametrize()
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_operation_fails_or_breaks_its_schema(case, callers, live_server):
    # Each example goes in with the key of every scope (the deepest paths) and with one more
    # caller, taken in turn, so every scope and the person meet every operation.
    other = callers[1 + zlib.crc32(repr((case.path_parameters, case.query, case.body)).encode())
                    % (len(callers) - 1)]
    for caller in (callers[0], other):
        case.call_and_validate(base_url=live_server.url, checks=CHECKS, **caller)
