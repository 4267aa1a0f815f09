"""The request middleware's cost: request id, timing, two metric updates and the access line.

    .venv/bin/python -m bench.request_middleware [--requests 20000] [--repeat 3]

Calls ``RequestObservationMiddleware`` around a view that answers at once, with a request as
Django's handler passes it (a resolved route, an anonymous user), and, as the baseline, the
view alone. The access line goes to a handler writing to ``/dev/null``: text, JSON, or off
(``LEDGER_ACCESS_LOG=0``). Each figure is the best of ``--repeat`` passes, in microseconds per
request. Target: < 100 us a request in JSON (a page's database work is milliseconds). No
database, no network.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

TARGET_US = 100.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ledger_portal.settings")
    os.environ.setdefault("LEDGER_DATA_DIR", "/tmp/ledger-bench")
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth.models import AnonymousUser
    from django.http import HttpRequest, HttpResponse
    from django.test import RequestFactory
    from django.urls import resolve

    from bench._common import git_state, record_figure, table, verdict
    from core.observability import RequestObservationMiddleware

    match = resolve("/healthz")
    answer = HttpResponse(b"ok")

    def view(request: HttpRequest) -> HttpResponse:
        request.resolver_match = match
        return answer

    factory = RequestFactory()
    requests = [factory.get("/healthz", HTTP_X_REQUEST_ID=f"bench-{i}")
                for i in range(args.requests)]
    for request in requests:
        request.user = AnonymousUser()

    def per_request_us(call: Callable[[HttpRequest], HttpResponse]) -> float:
        best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            for request in requests:
                call(request)
            best = min(best, time.perf_counter() - started)
        return best / len(requests) * 1e6

    access = logging.getLogger("ledger.access")
    access.propagate = False
    sink = open(os.devnull, "w")  # noqa: SIM115 (closed at exit)
    handler = logging.StreamHandler(sink)
    access.addHandler(handler)
    logging_config: dict[str, Any] = settings.LOGGING
    formatters: dict[str, dict[str, Any]] = logging_config["formatters"]
    spec = dict(formatters["json"])
    module, name = spec.pop("()").rsplit(".", 1)
    json_formatter = getattr(__import__(module, fromlist=[name]), name)(**spec)
    text_formatter = logging.Formatter(formatters["text"]["format"])
    middleware = RequestObservationMiddleware(view)

    rows = [("view alone (baseline)", per_request_us(view))]
    access.setLevel(logging.WARNING)
    rows.append(("middleware, access line off", per_request_us(middleware)))
    access.setLevel(logging.INFO)
    handler.setFormatter(text_formatter)
    rows.append(("middleware, text access line", per_request_us(middleware)))
    handler.setFormatter(json_formatter)
    rows.append(("middleware, JSON access line", per_request_us(middleware)))
    sink.close()

    print(f"# {platform.python_version()} {git_state()} requests={args.requests} "
          f"best of {args.repeat}")
    print(table(["case", "us/request"], [(case, f"{us:.1f}") for case, us in rows]))
    overhead = rows[-1][1] - rows[0][1]
    ok = overhead < TARGET_US
    record_figure("request_middleware", "JSON middleware overhead per request",
                  f"{overhead:.1f} us", f"< {TARGET_US:.0f} us",
                  f"middleware without the access line {rows[1][1]:.1f} us",
                  f"{rows[-1][1] / rows[1][1]:.2f}x", ok)
    print(f"JSON middleware overhead: {overhead:.1f} us/request (target < {TARGET_US:.0f}): "
          f"{verdict(ok)}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
