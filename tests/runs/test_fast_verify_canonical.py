"""`ledger verify`'s fast pass on PostgreSQL (``runs.integrity_fast``) hashes exactly the bytes
the record's content has in canonical form (``content_of`` + ``canonical_json`` over the values
Django reads), and where those bytes cannot exist for an ingested record it says so instead of
matching; and it fails every ledger tampered where only it looks (a joined reference, a record
at seq 0, a number no ingested record can hold)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.canonical import canonical_json
from runs import integrity_fast
from runs.integrity import RECORD_MODELS, verify_tenant
from runs.models import ModelCall, Run, ToolCall
from runs.models.base import content_of
from tests.triggers import bypassing_triggers

# -- the canonical bytes, old and new --------------------------------------------------------

# Adversarial JSON: every kind of string (unicode past the BMP, controls, quotes, escapes; not
# lone surrogates or NUL, which PostgreSQL's jsonb and text refuse), floats of every size,
# integers at and past the 64-bit edges, nesting with keys that sort differently by length,
# code point and UTF-8.
TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
               max_size=12)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19,
                     10**25]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e20, 1e-7, 5e-324, 1.7976931348623157e308, 0.1, 1e16,
                     123456789012345678.0]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


def old_bytes(content: dict[str, Any]) -> bytes | None:
    """What verify hashed before: ``canonical_json`` of the values (None where it raises)."""
    try:
        return canonical_json(content)
    except TypeError:
        return None


#: a tool call's content fields as verify reads them: input and the optional ref as JSON text
TOOL_CALL = integrity_fast.ColumnContent(
    "tool_call", ("call_id", "input", "attempt", "supports_rollback", "tool_call_ref"), (1, 4),
    ("tool_call_ref",))


def as_columns(value: Any, text: str, optional: Any, ensure_ascii: bool) -> tuple[Any, ...]:
    """The columns PostgreSQL hands over: a JSON column as its text, SQL NULL as None."""
    return (text, json.dumps(value, ensure_ascii=ensure_ascii), 3, False,
            None if optional is None else json.dumps(optional, ensure_ascii=ensure_ascii))


def one_json_column(text: str) -> tuple[integrity_fast.ColumnContent, tuple[str]]:
    return integrity_fast.ColumnContent("x", ("v",), (0,)), (text,)


@given(value=JSON, text=TEXT, optional=st.one_of(st.just(""), st.none(), JSON),
       ensure_ascii=st.booleans())
@settings(max_examples=400, deadline=None)
def test_canonical_bytes_from_columns_are_the_old_ones(value, text, optional, ensure_ascii):
    columns = as_columns(value, text, optional, ensure_ascii)
    # the values as Django reads them (json.loads of each JSON column)
    parsed = {"call_id": text, "input": json.loads(columns[1]), "attempt": 3,
              "supports_rollback": False,
              "tool_call_ref": None if columns[4] is None else json.loads(columns[4])}
    old = old_bytes(content_of("tool_call", TOOL_CALL.names, parsed,
                               frozenset({"tool_call_ref"})))
    assert TOOL_CALL.canonical_exact(columns) == old


@given(value=JSON, text=TEXT, optional=st.one_of(st.just(""), st.none(), JSON),
       ensure_ascii=st.booleans())
@settings(max_examples=400, deadline=None)
def test_the_quick_content_hash_is_the_exact_one(value, text, optional, ensure_ascii):
    """``ColumnContent.hashed`` skips the exact reading unless the canonical bytes hold an
    exponent; it hashes what the exact reading gives all the same."""
    columns = as_columns(value, text, optional, ensure_ascii)
    for reader in (TOOL_CALL, integrity_fast.ColumnContent(
            TOOL_CALL.kind, TOOL_CALL.names, TOOL_CALL.json_at)):
        exact = reader.canonical_exact(columns)
        assert reader.hashed(columns)[0] == (
            integrity_fast.UNVERIFIABLE if exact is None else hashlib.sha256(exact).hexdigest())


@pytest.mark.parametrize("text", [
    '{"n": 18446744073709551616}', '{"n": -9223372036854775809}', '{"n": 1e400}',
    '{"n": -1e400}', '{"n": NaN}', "not json", '{"n": 1}x'])
def test_the_quick_content_hash_of_what_cannot_be_canonical_is_unverifiable(text):
    reader, columns = one_json_column(text)
    assert reader.hashed(columns)[0] == integrity_fast.UNVERIFIABLE


@pytest.mark.parametrize("text", ['{"n": 1e20}', '{"s": "e+"}', '{"n": 18446744073709551615}',
                                  '{"n": -9223372036854775808, "f": 1.5e-7}'])
def test_the_quick_content_hash_of_canonical_content_is_its_sha256(text):
    expected = hashlib.sha256(canonical_json({"kind": "x", "v": json.loads(text)})).hexdigest()
    reader, columns = one_json_column(text)
    assert reader.hashed(columns)[0] == expected


@pytest.mark.parametrize("number", ["18446744073709551616", "-9223372036854775809",
                                    "123456789012345678901234567890"])
def test_an_integer_past_64_bits_is_unverifiable_not_a_float(number):
    # orjson.loads alone reads these as floats: 2**64 and 2**64 + 1 would hash alike.
    reader, columns = one_json_column(f'{{"n": {number}}}')
    assert reader.canonical_exact(columns) is None


def test_a_non_finite_number_is_unverifiable_not_null():
    # json.loads reads 1e400 as inf and canonical_json writes inf as null: a null could
    # become 1e400 unseen.
    for text in ('{"n": 1e400}', '{"n": -1e400}'):
        reader, columns = one_json_column(text)
        assert reader.canonical_exact(columns) is None


@pytest.mark.postgres
@pytest.mark.django_db
@given(value=JSON, text=TEXT)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_postgresql_json_text_gives_the_old_bytes(value, text):
    """The texts PostgreSQL really hands over: jsonb as stored (numbers normalised, keys
    reordered) as text, beside text, integer, boolean and NULL columns, against Django's
    reading of the same jsonb."""
    try:
        stored = json.dumps(value)  # what Django's JSONField writes
    except ValueError:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s::text, 7, true, NULL, %s::jsonb::text", [text, stored])
        columns = cursor.fetchone()
    reader = integrity_fast.ColumnContent("x", ("id", "n", "b", "z", "v"), (4,))
    old = old_bytes({"kind": "x", "id": text, "n": 7, "b": True, "z": None,
                     "v": json.loads(columns[4])})
    assert reader.canonical_exact(columns) == old
    assert reader.hashed(columns)[0] == (
        integrity_fast.UNVERIFIABLE if old is None else hashlib.sha256(old).hexdigest())


# -- the records: what PostgreSQL builds is what ingestion hashed -----------------------------


@pytest.fixture
def ledger(acme, record, make_run) -> list[Run]:
    runs = [make_run() for _ in range(3)]
    record(acme, *runs)
    return list(Run.objects.filter(tenant=acme).order_by("pk"))


@pytest.mark.postgres
def test_every_record_kind_hashes_as_ingestion_did(acme, ledger):
    for model in (Run, *RECORD_MODELS):
        columns, reader, source = integrity_fast.content_select(model)
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT t.content_hash, {', '.join(columns)} FROM {source}")
            rows = cursor.fetchall()
        assert rows, model
        for stored, *values in rows:
            assert reader.hashed(values)[0] == stored, model


# -- attacks on what the fast pass reads -----------------------------------------------------


def only_break(acme):
    report = verify_tenant(acme)
    assert len(report.breaks) == 1, [str(b) for b in report.breaks]
    return report.breaks[0]


@pytest.mark.postgres
def test_renaming_the_tool_a_call_joins_is_named_modified(acme, ledger):
    call = ToolCall.objects.filter(run=ledger[0]).order_by("seq").first()
    assert call is not None
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_tool SET name = name || '-renamed' WHERE id = %s",
                       [call.tool_id])
    report = verify_tenant(acme)
    assert not report.intact
    assert {b.problem for b in report.breaks} == {"modified"}
    assert any(b.run_id == ledger[0].run_id and b.seq == call.seq for b in report.breaks)


@pytest.mark.postgres
def test_repointing_a_model_calls_step_is_named_modified(acme, ledger):
    call = ModelCall.objects.filter(run=ledger[0], step__isnull=False).order_by("seq").first()
    assert call is not None
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_modelcall SET step_id = NULL WHERE id = %s", [call.pk])
    problem = only_break(acme)
    assert (problem.run_id, problem.seq, problem.problem) == (ledger[0].run_id, call.seq,
                                                              "modified")


def test_a_record_slipped_in_at_seq_0_is_named_inserted(acme, ledger):
    """Seq 0 is the run's own position: no link accounts for a record there."""
    target = ledger[1]
    with bypassing_triggers() as cursor:
        cursor.execute(
            "INSERT INTO runs_annotation (tenant_id, run_id, seq, content_hash, chain_hash, "
            "recorded_at, annotation_id, annotation_kind, target_call_id, body, data, "
            "author_label) VALUES (%s, %s, 0, %s, %s, %s, 'forged', 'note', '', "
            "'all fine here', '{}', 'intruder')",
            [acme.pk, target.pk, target.content_hash, target.chain_hash, target.started_at])
    problem = only_break(acme)
    assert (problem.run_id, problem.seq, problem.problem) == (target.run_id, 0, "inserted")


def _set_input(call: ToolCall, text: str) -> None:
    with bypassing_triggers() as cursor:
        cursor.execute("UPDATE runs_toolcall SET input = %s::jsonb WHERE id = %s",
                       [text, call.pk])


@pytest.mark.postgres
def test_an_integer_past_64_bits_is_named_modified(acme, record, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = {"amount": 5}
    record(acme, run)
    call = ToolCall.objects.get(tenant=acme, call_id=run["tool_calls"][0]["call_id"])
    assert verify_tenant(acme).intact
    # orjson.loads reads it as a float; canonical_json cannot write it as an integer.
    _set_input(call, '{"amount": 18446744073709551617}')
    problem = only_break(acme)
    assert (problem.seq, problem.problem) == (call.seq, "modified")


@pytest.mark.postgres
def test_an_infinite_number_in_place_of_null_is_named_modified(acme, record, make_run):
    run = make_run()
    run["tool_calls"][0]["input"] = {"limit": None}
    record(acme, run)
    call = ToolCall.objects.get(tenant=acme, call_id=run["tool_calls"][0]["call_id"])
    assert verify_tenant(acme).intact
    _set_input(call, '{"limit": 1e400}')  # json.loads: inf, which canonical_json writes null
    problem = only_break(acme)
    assert (problem.seq, problem.problem) == (call.seq, "modified")


# -- governance records: what PostgreSQL builds is what record_hash hashes --------------------


@pytest.mark.postgres
@pytest.mark.django_db
@given(value=JSON, text=TEXT)
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_governance_record_hashes_as_record_hash_does(acme, value, text):
    from django.db import transaction

    from policies.models import Decision
    from runs.governance_seal import (
        KINDS,
        built_rows,
        content_columns,
        record_hash,
    )

    try:
        Decision.objects.create(tenant=acme, tool=text, action_class="write", mode="live",
                                input={"v": value}, effect="allow", engine="embedded",
                                latency_us=7, reason=text, matched_rules=[value])
    except (TypeError, ValueError):  # what Django's JSONField cannot write
        return
    kind = KINDS[0]
    rows = kind.rows(acme.pk).order_by("-pk")
    row = rows.values(*kind.fields).first()
    assert row is not None
    try:
        old = record_hash(kind, row)
    except TypeError:  # an integer past 64 bits: canonical_json refuses it
        old = integrity_fast.UNVERIFIABLE
    _, reader = content_columns(kind)
    with transaction.atomic():
        [built] = list(built_rows(kind, rows.filter(pk=row["id"])))
    assert reader.hashed(built)[0] == old
