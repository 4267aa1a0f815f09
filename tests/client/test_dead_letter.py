"""The client never wedges and never loses a record silently: what it cannot deliver goes to
its dead-letter file, in order and with the reason, and the rest keep flowing; a run that
lost records to a full buffer reaches the portal as a prefix, never with holes, and the file
sends the rest later."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.models import Tenant
from ledger_client.dead_letter import main as resend_main
from runs.integrity import verify_tenant
from runs.models import Run, ToolCall


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _calls(line: dict[str, Any]) -> list[int]:
    return [c["input"]["i"] for run in line["batch"]["runs"] for c in run.get("tool_calls", [])]


def _stored(run_id: str) -> list[int]:
    return [c["input"]["i"] for c in ToolCall.objects.filter(run__run_id=run_id)
            .order_by("seq").values("input")]


class FailingFront:
    """An HTTP front of the live portal on loopback that answers 500 to any batch holding
    ``poison`` (a server bug on one record) and passes everything else through."""

    def __init__(self, target: str):
        self.poisoned = 0

        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if b"poison" in body:
                    front.poisoned += 1
                    self._answer(500, b'{"detail": "server error"}')
                    return
                request = urllib.request.Request(
                    f"{target}{self.path}", data=body, method="POST",
                    headers={k: v for k, v in self.headers.items()
                             if k in ("Authorization", "Content-Type")})
                try:
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        self._answer(answer.status, answer.read())
                except urllib.error.HTTPError as exc:
                    self._answer(exc.code, exc.read())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def failing_front(live_server: Any) -> Iterator[FailingFront]:
    front = FailingFront(live_server.url)
    yield front
    front.server.shutdown()
    front.server.server_close()


def test_a_record_a_server_error_keeps_failing_on_is_set_aside_and_the_rest_flow(
        make_client: Any, failing_front: FailingFront, acme: Tenant,
        dead_letter_file: Path) -> None:
    client = make_client(failing_front.url, flush_interval=3600, max_server_errors=3)
    with client.run(agent_id="support-bot", goal="one bad call") as run:
        for i in range(6):
            marker = "poison" if i == 3 else "fine"
            with run.tool_call("lookup", action_class="read", input={"i": i, "m": marker}):
                pass
    assert client.flush(timeout=30)  # before: retried for ever, flush timed out

    assert _stored(run.run_id) == [0, 1, 2, 4, 5]
    [line] = _lines(dead_letter_file)
    assert (line["status"], _calls(line)) == (500, [3])
    assert "HTTP 500" in line["reason"]
    stats = client.stats()
    assert (stats.delivered, stats.rejected, stats.dead_lettered) == (5, 1, 1)


def test_a_refused_record_is_set_aside_with_the_portal_s_reason(
        make_client: Any, proxy: Any, acme: Tenant,
        dead_letter_file: Path) -> None:
    proxy.up()
    client = make_client(proxy.url, flush_interval=3600)
    with client.run(agent_id="support-bot", goal="one bad record") as bad:
        bad.model_call("gpt-4.1", response="fine")
        bad.model_call("gpt-4.1", response="x", classifications={"not a path!": "secret"})
    assert client.flush(timeout=30)

    [line] = _lines(dead_letter_file)
    assert line["status"] == 400
    assert any("classifications" in str(e.get("path")) for e in line["errors"])
    assert line["batch"]["runs"][0]["model_calls"][0]["classifications"] == {
        "not a path!": "secret"}
    assert dead_letter_file.stat().st_mode & 0o777 == 0o600


def test_a_full_buffer_leaves_no_hole_and_the_file_completes_the_run(
        make_client: Any, proxy: Any, acme: Tenant, agent_key: str, live_server: Any,
        dead_letter_file: Path, monkeypatch: Any) -> None:
    client = make_client(proxy.url, max_buffered_records=10, enqueue_timeout=0.01)
    with client.run(agent_id="support-bot", goal="through a full buffer") as run:
        for i in range(15):  # the portal is down: 10 fill the buffer, 5 find no room
            with run.tool_call("lookup", action_class="read", input={"i": i}):
                pass
        proxy.up()
        assert client.flush(timeout=30)  # the buffer drains
        for i in range(15, 20):  # room again, but the run already lost records
            with run.tool_call("lookup", action_class="read", input={"i": i}):
                pass
    assert client.flush(timeout=30)

    assert _stored(run.run_id) == list(range(10))  # a prefix: before, 15-19 came after a hole
    assert Run.objects.get(run_id=run.run_id).status == "running"  # its end waits in the file
    set_aside = [i for line in _lines(dead_letter_file) for i in _calls(line)]
    assert set_aside == list(range(10, 20))
    assert client.stats().dead_lettered == 10

    monkeypatch.setenv("LEDGER_URL", live_server.url)
    monkeypatch.setenv("LEDGER_API_KEY", agent_key)
    assert resend_main([str(dead_letter_file)]) == 0
    assert _stored(run.run_id) == list(range(20))
    assert Run.objects.get(run_id=run.run_id).status == "succeeded"
    assert verify_tenant(acme).intact


def test_what_is_left_at_close_is_set_aside_not_lost(
        make_client: Any, proxy: Any, acme: Tenant,
        dead_letter_file: Path) -> None:
    client = make_client(proxy.url)  # the portal never comes up
    with client.run(agent_id="support-bot", goal="closing in an outage") as run:
        for i in range(7):
            with run.tool_call("lookup", action_class="read", input={"i": i}):
                pass
    assert client.close(timeout=0.5) is False

    set_aside = [i for line in _lines(dead_letter_file) for i in _calls(line)]
    assert set_aside == list(range(7))
    assert client.stats().dead_lettered == 7
    assert not Run.objects.filter(run_id=run.run_id).exists()
