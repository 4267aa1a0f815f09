"""bench.decisions only: the portal's URLs plus a plain Django view returning a constant, the
same-run baseline for ``POST /api/v1/decisions/`` (served by the same gunicorn, through the
same middleware). Never the project's URL conf: ``bench/decisions_wsgi.py`` installs it in the
benchmark's own server process."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from ledger_portal.urls import urlpatterns as portal

CONSTANT_URL = "/bench/constant/"


@csrf_exempt
def constant(request: HttpRequest) -> HttpResponse:
    request.body  # noqa: B018 - read the body, as the API view does
    return HttpResponse(b'{"effect": "allow"}', status=201, content_type="application/json")


urlpatterns = [path(CONSTANT_URL.strip("/") + "/", constant), *portal]
