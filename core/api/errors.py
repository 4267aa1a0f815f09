"""The API's one error wrapper: how a service's refusal reaches an API client.

Services refuse with Django's ``PermissionDenied`` (who may not) and ``ValidationError`` (what
to fix); they are transactional, so a refused change left nothing behind. Every API view lets
them propagate and this handler answers 403 or 400 with the service's reason, the same words
the CLI (``ledger_portal.cli.run_command``) and the pages show.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ValidationError):
        exc = exceptions.ValidationError(_validation_detail(exc))
    return exception_handler(exc, context)


def _validation_detail(exc: ValidationError) -> dict[str, Any]:
    if hasattr(exc, "error_dict"):  # field by field, as a serializer reports them
        return exc.message_dict
    return {"detail": " ".join(exc.messages)}
