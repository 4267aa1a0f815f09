from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from core.models import Tenant

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


@pytest.fixture
def otlp_post(api_key: Callable[..., str]) -> Callable[..., Any]:
    """POST a body to /v1/traces with a key of ``tenant`` (ingest scope unless told)."""
    keys: dict[tuple[int, tuple[str, ...]], str] = {}

    def post(tenant: Tenant, body: bytes, content_type: str = PROTOBUF,
             scopes: tuple[str, ...] = ("ingest",), **headers: str) -> Any:
        key = keys.get((tenant.pk, scopes))
        if key is None:
            key = keys[(tenant.pk, scopes)] = api_key(tenant, list(scopes))
        return Client().post("/v1/traces", data=body, content_type=content_type,
                             headers={"Authorization": f"Bearer {key}", **headers})
    return post


def export_response(response: Any) -> ExportTraceServiceResponse:
    assert response["Content-Type"] == PROTOBUF
    return ExportTraceServiceResponse.FromString(response.content)
