"""An annotation POST is validated whole before anything is written: poison is a 400 naming
its path, and nothing lands."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from runs.models import Annotation, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(acme, record, make_run) -> dict[str, Any]:
    recorded = make_run()
    record(acme, recorded)
    return recorded


def post_raw(client, run_id: str, body: str):
    return client.post(reverse("api:run-annotations", args=[run_id]), data=body.encode(),
                       content_type="application/json")


@pytest.mark.parametrize(("body", "path"), [
    ('{"body": "ok", "data": {"a": {"b": 18446744073709551616}}}', "data.a.b"),
    ('{"body": "ok", "data": {"a": [9223372036854775808]}}', "data.a[0]"),
    ('{"body": "lone \\ud800 surrogate"}', "JSON parse error"),
    ('{"body": "ok", "data": {"a": "lone \\udfff"}}', "JSON parse error"),
    ('{"body": "ok", "data": {"a": "nul \\u0000"}}', "data.a"),
    ('{"body": "ok", "data": {"d": ' + "[" * 100 + "]" * 100 + "}}", "data.d"),
    ('{"body": "ok", "target_call_id": "a/b"}', "target_call_id"),
], ids=["2^64", "2^63", "surrogate-body", "surrogate-data", "nul-data", "deep", "odd-id"])
def test_poison_in_an_annotation_is_a_400_naming_its_path_and_writes_nothing(
        acme, alice, run, user_client, body, path):
    before = Annotation.objects.count()
    response = post_raw(user_client(alice), run["run_id"], body)
    assert response.status_code == 400, response.content
    assert path in response.content.decode(), response.content
    assert Annotation.objects.count() == before


@pytest.mark.parametrize(("data", "path"), [
    ({"a": {"b": 2**64}}, "data.a.b"), ({"a": ["x\udfffy"]}, "data.a[0]"),
])
def test_the_service_behind_the_cli_and_the_form_names_the_path_too(acme, alice, run, data,
                                                                    path):
    from runs.services import AnnotationRejected, annotate_run

    stored = Run.objects.get(run_id=run["run_id"])
    before = Annotation.objects.count()
    with pytest.raises(AnnotationRejected, match=path.replace("[", r"\[").replace("]", r"\]")):
        annotate_run(stored, by=alice, body="ok", data=data)
    with pytest.raises(AnnotationRejected, match="body"):
        annotate_run(stored, by=alice, body="lone \ud800")
    assert Annotation.objects.count() == before
