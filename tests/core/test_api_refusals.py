"""The API's one error wrapper: a service's refusal is an answer, never a server error.

Services refuse with Django's ``PermissionDenied`` (who may not) and ``ValidationError`` (what
to fix). Whatever API view calls them, the client gets 403 or 400 with the service's reason.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView


class RefusingView(APIView):
    """Stands in for any view: it calls a "service" that refuses the way services do."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []

    def post(self, request: Request, how: str) -> Response:
        refusals: dict[str, Exception] = {
            "denied": PermissionDenied("this needs the operate role on acme"),
            "denied-bare": PermissionDenied(),
            "invalid": ValidationError("a justification is required to reject"),
            "invalid-many": ValidationError(["first problem", "second problem"]),
            "invalid-fields": ValidationError({"window_to": ["must follow window_from"]}),
        }
        raise refusals[how]


urlpatterns = [path("refuse/<str:how>/", RefusingView.as_view())]


@pytest.fixture
def api(settings: Any) -> APIClient:
    settings.ROOT_URLCONF = __name__
    return APIClient(raise_request_exception=False)


@pytest.mark.parametrize(("how", "code", "body"), [
    ("denied", 403, {"detail": "this needs the operate role on acme"}),
    ("denied-bare", 403, {"detail": "You do not have permission to perform this action."}),
    ("invalid", 400, {"detail": "a justification is required to reject"}),
    ("invalid-many", 400, {"detail": "first problem second problem"}),
    ("invalid-fields", 400, {"window_to": ["must follow window_from"]}),
])
def test_a_services_refusal_is_a_client_error_with_its_reason(
        api: APIClient, how: str, code: int, body: dict[str, Any]) -> None:
    answer = api.post(f"/refuse/{how}/")

    assert answer.status_code == code
    assert answer.json() == body


def test_no_api_view_translates_refusals_itself() -> None:
    """The wrapper is the one place: a view that catches Django's refusals to re-raise them as
    DRF's would be a second one, free to drift (a list here, a joined string there)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    offenders = []
    for module in sorted(root.glob("*/api/*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ExceptHandler) and node.type is not None:
                caught = ast.unparse(node.type)
                if any(name in caught for name in ("DjangoPermissionDenied",
                                                   "DjangoValidationError")) or (
                        "ValidationError" in caught and "pydantic" not in caught
                        and _imports_django_validation_error(module)):
                    offenders.append(f"{module.relative_to(root)}:{node.lineno} {caught}")
    assert offenders == []


def _imports_django_validation_error(module: Any) -> bool:
    return "from django.core.exceptions import ValidationError" in module.read_text()
