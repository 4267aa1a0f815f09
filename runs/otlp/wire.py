"""OTLP/HTTP trace export on the wire: bodies in, spans out, responses back.

Both encodings decode to the same ``ExportTraceServiceRequest`` (``opentelemetry-proto``) and
from it to plain span dicts, so everything after this module sees one shape. The JSON encoding
differs from protobuf's canonical JSON mapping in one place that matters: trace and span ids are
hex, not base64 (OTLP specification, "JSON Protobuf Encoding"); they are rewritten before
``json_format`` parses the body.
"""

from __future__ import annotations

import base64
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

M = TypeVar("M", bound=Message)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CONTENT_TYPES = (PROTOBUF, JSON)

SpanDict = dict[str, Any]

_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
          5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}


class WireError(Exception):
    """The request cannot be decoded; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def media_type(content_type: str) -> str:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    return content_type.split(";", 1)[0].strip().lower()


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip or none), never inflating past ``limit`` bytes."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding != "gzip":
        raise WireError(415, f"Content-Encoding {encoding!r} is not supported; send gzip or "
                        "no encoding.")
    inflater = zlib.decompressobj(wbits=31)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise WireError(400, f"The body is not valid gzip: {exc}.") from exc
    if len(data) > limit:
        raise WireError(413, f"The decompressed body is over the limit of {limit} bytes.")
    if not inflater.eof:
        raise WireError(400, "The gzip body is truncated.")
    return data


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    return parse_message(body, content_type, ExportTraceServiceRequest(), "resourceSpans",
                         _hex_ids_to_base64)


def parse_message(body: bytes, content_type: str, message: M, top: str,
                  rewrite_ids: Callable[[dict[str, Any]], None]) -> M:
    """``body`` read into ``message`` (an OTLP export request) from protobuf or OTLP JSON;
    ``top`` names its list in JSON and ``rewrite_ids`` turns the JSON's hex ids into what
    protobuf's JSON mapping reads. A WireError (400) naming what is wrong otherwise."""
    kind = type(message).__name__
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            raise WireError(400, f"The body is not an OTLP {kind} in protobuf: {exc}.") from exc
        return message
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(400, f"The body is not JSON: {exc}.") from exc
    if not isinstance(data, dict):
        raise WireError(400, f"The body is not an OTLP {kind}: expected a JSON object with "
                        f"{top}.")
    rewrite_ids(data)
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise WireError(400, f"The body is not an OTLP {kind}: {exc}.") from exc
    return message


_ID_FIELDS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP JSON carries ids as hex; protobuf's JSON mapping wants base64 for ``bytes``."""
    for i, resource_spans in enumerate(items(data, "resourceSpans", "resource_spans")):
        for j, scope_spans in enumerate(items(resource_spans, "scopeSpans", "scope_spans")):
            for k, span in enumerate(items(scope_spans, "spans")):
                where = f"resourceSpans[{i}].scopeSpans[{j}].spans[{k}]"
                rewrite_ids(span, where)
                for n, link in enumerate(items(span, "links")):
                    rewrite_ids(link, f"{where}.links[{n}]")


def items(obj: Any, *keys: str) -> list[Any]:
    if not isinstance(obj, dict):
        return []
    for key in keys:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return []


def rewrite_ids(obj: Any, where: str) -> None:
    if not isinstance(obj, dict):
        return
    for key in _ID_FIELDS:
        value = obj.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise WireError(400, f"{where}.{key}: expected a hex string, got {value!r}.")
        try:
            raw = bytes.fromhex(value)
        except ValueError as exc:
            raise WireError(400, f"{where}.{key}: {value!r} is not hex (OTLP JSON encodes ids "
                            "as hex strings).") from exc
        obj[key] = base64.b64encode(raw).decode()


# -- protobuf -> span dicts ------------------------------------------------------------------


@dataclass
class DecodedSpans:
    spans: list[SpanDict] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # one reason per rejected span


def spans_of(request: ExportTraceServiceRequest) -> DecodedSpans:
    """Every span of the request as a plain dict; spans without valid ids are rejected."""
    out = DecodedSpans()
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = {"name": scope_spans.scope.name, "version": scope_spans.scope.version}
            for span in scope_spans.spans:
                problem = _id_problem(span.trace_id, 16, "trace_id") or _id_problem(
                    span.span_id, 8, "span_id") or (_id_problem(
                        span.parent_span_id, 8, "parent_span_id") if span.parent_span_id
                        else None)
                if problem:
                    out.rejected.append(f"span {span.name!r}: {problem}")
                    continue
                out.spans.append({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": _KINDS.get(span.kind, str(span.kind)),
                    "start_time_unix_nano": span.start_time_unix_nano,
                    "end_time_unix_nano": span.end_time_unix_nano,
                    "attributes": attributes_of(span.attributes),
                    "events": [{"name": e.name, "time_unix_nano": e.time_unix_nano,
                                "attributes": attributes_of(e.attributes)}
                               for e in span.events],
                    "links": [{"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                               "attributes": attributes_of(link.attributes)}
                              for link in span.links],
                    "status": {"code": _STATUS.get(span.status.code, str(span.status.code)),
                               "message": span.status.message},
                    "resource": resource,
                    "scope": scope,
                })
    return out


def _id_problem(raw: bytes, size: int, name: str) -> str | None:
    if len(raw) != size:
        return f"{name} has {len(raw)} bytes, not {size}"
    if not any(raw):
        return f"{name} is all zeroes (invalid)"
    return None


def attributes_of(pairs: Any) -> dict[str, Any]:
    out = {}
    for kv in pairs:
        value = kv.value
        # most attributes are strings: value_of's first case, without the call
        out[kv.key] = (value.string_value if value.WhichOneof("value") == "string_value"
                       else value_of(value))
    return out


def value_of(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":  # most attributes: first
        return value.string_value
    if which is None:
        return None
    if which == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if which == "double_value" and not math.isfinite(value.double_value):
        return str(value.double_value)  # JSON (and so the ledger) has no NaN or infinity
    return getattr(value, which)


# -- responses -------------------------------------------------------------------------------


def export_response(content_type: str, rejected: int, message: str) -> bytes:
    response = ExportTraceServiceResponse()
    if rejected or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    return encode_response(content_type, response)


def encode_response(content_type: str, response: Message) -> bytes:
    """An export answer in the request's encoding."""
    if content_type == PROTOBUF:
        serialized: bytes = response.SerializeToString()
        return serialized
    return str(json_format.MessageToJson(response, indent=None)).encode()


def status_body(content_type: str, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (what OTLP/HTTP answers errors with) in the request's encoding.

    Encoded by hand: two scalar fields are not worth a dependency on googleapis-common-protos.
    """
    if content_type == PROTOBUF:
        text = message.encode()
        return (b"\x08" + _varint(code) if code else b"") + b"\x12" + _varint(len(text)) + text
    return orjson.dumps({"code": code, "message": message})


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


__all__ = ["CONTENT_TYPES", "JSON", "PROTOBUF", "DecodedSpans", "SpanDict",
           "WireError", "decompress", "encode_response", "export_response", "items",
           "media_type", "parse_message", "parse_request", "rewrite_ids", "spans_of",
           "status_body"]
