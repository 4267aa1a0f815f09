"""Serve the demo's tools (``ledger_portal.demo_tools``) on DEMO_TOOLS_ADDR, loopback only,
until stopped: ``make demo`` runs it beside the portal, so replays and rollbacks reach them."""

from __future__ import annotations

import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from ledger_portal import demo_tools


class Command(BaseCommand):
    help = __doc__

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            host, port = demo_tools.address()
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        try:
            with demo_tools.serve(host, port, log=self.stdout.write) as serving:
                self.stdout.write(f"Demo tools at {serving.url}/tools/<name> (Ctrl-C stops)")
                threading.Event().wait()
        except OSError as exc:
            raise CommandError(f"the demo's tools cannot listen on {host}:{port}: {exc} "
                               "(another demo running? set DEMO_TOOLS_ADDR)") from exc
        except KeyboardInterrupt:
            pass
