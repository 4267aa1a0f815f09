"""Response shapes of the read API, for the OpenAPI schema (see ``presenters.py``)."""

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import ActionClass, RunStatus, ToolCallStatus


class TenantSerializer(serializers.Serializer[Any]):
    slug = serializers.SlugField()
    name = serializers.CharField()
    outage_mode = serializers.BooleanField()


class AgentSerializer(serializers.Serializer[Any]):
    agent_id = serializers.CharField()
    tenant = serializers.SlugField()
    name = serializers.CharField()
    description = serializers.CharField()
    created_at = serializers.DateTimeField()


def _hmac(of: str) -> dict[str, str]:
    return {"type": "string", "description": f'HMAC-SHA256(k, "{of}"), hex'}


@extend_schema_field({
    "type": "object", "nullable": True, "required": ["key"],
    "description": "Keyed commitments (runs/commitments.py) in place of hashes of what "
                   "redaction hides: recomputable from the unredacted record by whoever holds "
                   "the tenant's commitment key k, meaningless without it. Null at level none.",
    "properties": {
        "key": {"type": "string", "description": "The key's generation and fingerprint."},
        "record": _hmac("record:<content_hash>"), "chain": _hmac("chain:<chain_hash>"),
        "head": _hmac("chain:<head_hash>"), "found_head": _hmac("chain:<found head>"),
        "signed_head": _hmac("chain:<signed head>"), "action": _hmac("action:<action_hash>"),
        "fields": {"type": "object", "additionalProperties": _hmac(
            "field:<name>:<canonical JSON of the unredacted value>"),
            "description": "Each field the redaction changed."},
    }})
class CommitmentField(serializers.JSONField):
    pass


class IntegrityAlarmSerializer(serializers.Serializer[Any]):
    tenant = serializers.SlugField()
    run_id = serializers.CharField()
    seq = serializers.IntegerField()
    found_head = serializers.CharField(allow_null=True, help_text=(
        "The head the digest sealer refused to sign; null unless read at redaction level none "
        "(see commitment)."))
    signed_seq = serializers.IntegerField()
    signed_head = serializers.CharField(allow_null=True, help_text=(
        "The head the digest signed; null unless read at redaction level none."))
    digest_number = serializers.IntegerField(help_text="The digest that signed the old head.")
    detail = serializers.CharField()
    raised_at = serializers.DateTimeField()
    commitment = CommitmentField(allow_null=True, help_text=(
        "Below redaction level none: both heads as keyed commitments (each the ``chain`` "
        "commitment of the record it is)."))


class RunSerializer(serializers.Serializer[Any]):
    run_id = serializers.CharField()
    tenant = serializers.SlugField()
    agent_id = serializers.CharField()
    goal = serializers.CharField()
    trigger_ref = serializers.CharField()
    status = serializers.ChoiceField(choices=RunStatus.choices)
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    replay_of = serializers.CharField(allow_null=True)
    metadata = serializers.JSONField()
    last_seq = serializers.IntegerField(help_text="Sequence number of the run's newest record.")
    head_hash = serializers.CharField(allow_null=True, help_text=(
        "Chain hash of the run's newest record; null unless read at redaction level none "
        "(see commitment)."))
    recorded_at = serializers.DateTimeField()
    commitment = CommitmentField(allow_null=True, help_text=(
        "Below redaction level none: the head as a keyed commitment. Null at none."))


class _RecordSerializer(serializers.Serializer[Any]):
    seq = serializers.IntegerField()
    content_hash = serializers.CharField(allow_null=True, help_text=(
        "SHA-256 of the record's canonical content; null unless read at redaction level none "
        "(a hash of what redaction hides would let a reader test guesses of it)."))
    chain_hash = serializers.CharField(allow_null=True, help_text=(
        "The record's link in the run's hash chain; null unless read at redaction level none."))
    commitment = CommitmentField(allow_null=True, help_text=(
        "Below redaction level none: the hashes as keyed commitments. Null at none."))


class StepSerializer(_RecordSerializer):
    step_id = serializers.CharField()
    index = serializers.IntegerField()
    title = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    metadata = serializers.JSONField()


class ModelCallSerializer(_RecordSerializer):
    call_id = serializers.CharField()
    step_id = serializers.CharField(allow_null=True)
    provider = serializers.CharField()
    model = serializers.CharField()
    messages = serializers.JSONField()
    response = serializers.JSONField()  # any JSON value, null included
    request = serializers.JSONField(
        help_text="What was asked beside the messages (model requested, parameters, tools "
        "offered), or null.")
    input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    latency_ms = serializers.IntegerField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    error = serializers.JSONField()  # any JSON value, null included
    classifications = serializers.DictField(child=serializers.CharField())


class ToolCallSerializer(_RecordSerializer):
    call_id = serializers.CharField()
    run_id = serializers.CharField()
    step_id = serializers.CharField(allow_null=True)
    tool = serializers.CharField()
    action_class = serializers.ChoiceField(choices=ActionClass.choices)
    input = serializers.JSONField()
    output = serializers.JSONField()  # any JSON value, null included
    status = serializers.ChoiceField(choices=ToolCallStatus.choices)
    error = serializers.JSONField()  # any JSON value, null included
    attempt = serializers.IntegerField()
    retry_of = serializers.CharField(allow_null=True)
    started_at = serializers.DateTimeField(allow_null=True)
    ended_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    idempotency_key = serializers.CharField()
    supports_rollback = serializers.BooleanField()
    classifications = serializers.DictField(child=serializers.CharField())
    tool_call_ref = serializers.CharField(
        help_text="The tool call's own id, as the agent or its framework named it "
        "(OpenTelemetry gen_ai.tool.call.id); empty when not given. call_id is the ledger's id.")


class ToolCallDetailSerializer(ToolCallSerializer):
    decisions = serializers.ListField(
        child=serializers.DictField(), help_text="The policy trail of this call (decisions "
        "taken before it was recorded, linked by call_id), oldest first.")


class AnnotationSerializer(_RecordSerializer):
    annotation_id = serializers.CharField()
    annotation_kind = serializers.CharField()
    target_call_id = serializers.CharField()
    body = serializers.CharField()
    data = serializers.JSONField()  # type: ignore[assignment]
    author_label = serializers.CharField()
    recorded_at = serializers.DateTimeField()


class TimelineEntrySerializer(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=["step", "model_call", "tool_call", "annotation"])
    seq = serializers.IntegerField()


class RunDetailSerializer(RunSerializer):
    timeline = TimelineEntrySerializer(
        many=True, help_text="The records in chain order (all of them, up to 2,000); each "
        "entry carries the fields of its kind (Step, ModelCall, ToolCall or Annotation).")
    timeline_next = serializers.URLField(allow_null=True, help_text=(
        "Null when the timeline is whole; for a run of more than 2,000 records, the records "
        "cursor (GET /api/v1/runs/<run_id>/records/) from the last one included."))


class RunRecordsPageSerializer(serializers.Serializer[Any]):
    run_id = serializers.CharField()
    results = TimelineEntrySerializer(
        many=True, help_text="Records in chain order, redacted as the run detail's timeline.")
    next = serializers.URLField(allow_null=True, help_text="The next page; null at the end.")


class IngestCountsSerializer(serializers.Serializer[Any]):
    runs = serializers.IntegerField()
    steps = serializers.IntegerField()
    model_calls = serializers.IntegerField()
    tool_calls = serializers.IntegerField()
    annotations = serializers.IntegerField()


class DeferredProblemSerializer(serializers.Serializer[Any]):
    path = serializers.CharField(help_text="Where in the batch, e.g. runs[0].tool_calls[3]")
    reason = serializers.CharField()


class IngestResultSerializer(serializers.Serializer[Any]):
    created = IngestCountsSerializer()
    unchanged = IngestCountsSerializer()
    deferred = DeferredProblemSerializer(many=True, required=False, help_text=(
        "Lenient tenants only: what was kept as deferred items (unknown fields or values), "
        "pending ledger schema reconciliation."))


class ProblemSerializer(serializers.Serializer[Any]):
    path = serializers.CharField(help_text="Where in the batch, e.g. runs[0].tool_calls[3].status")
    message = serializers.CharField()


class BatchErrorSerializer(serializers.Serializer[Any]):
    detail = serializers.CharField()
    errors = ProblemSerializer(many=True)  # type: ignore[assignment]


class SigningKeySerializer(serializers.Serializer[Any]):
    algorithm = serializers.CharField()
    public_key = serializers.CharField(help_text="Raw Ed25519 public key, base64.")
    key_id = serializers.CharField(help_text="First 16 hex digits of the key's SHA-256.")
    previous_public_keys = serializers.ListField(child=serializers.CharField())
