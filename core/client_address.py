"""The address a request came from, as the login lockout and the login record read it.

Behind ``LEDGER_PROXY_COUNT`` proxies, each appends the address it saw to
``X-Forwarded-For``, so the client is that many entries from the right; whatever stands left
of it was written by the client itself and is never believed. Without proxies the header is
ignored: anyone may send one.
"""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(request: HttpRequest) -> str | None:
    peer = request.META.get("REMOTE_ADDR") or None
    proxies = settings.LEDGER_PROXY_COUNT
    if not proxies:
        return peer
    hops = [hop.strip() for hop in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
            if hop.strip()]
    if len(hops) < proxies:  # the proxies did not say: the connection's peer is all we know
        return peer
    try:
        return str(ipaddress.ip_address(hops[-proxies]))
    except ValueError:
        return peer
