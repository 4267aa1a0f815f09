"""A live portal over real HTTP (pytest-django's live_server), an agent key for acme, and a
loopback TCP proxy the tests can take down and bring back up."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.models import Tenant
from ledger_client import LedgerClient
from tests.policies.conftest import dave, publish  # noqa: F401  (fixtures, for gating tests)


@pytest.fixture
def agent_key(acme: Tenant, api_key: Callable[..., str]) -> str:
    return api_key(acme, ["ingest", "view_ledger"])


@pytest.fixture
def make_client(live_server: Any, agent_key: str) -> Iterator[Callable[..., LedgerClient]]:
    """Clients of the live portal with quick retries; closed at the end of the test."""
    made: list[LedgerClient] = []

    def make(url: str | None = None, **options: Any) -> LedgerClient:
        options = {"backoff_base": 0.05, "backoff_max": 0.2, "flush_interval": 0.2,
                   "close_at_exit": False, **options}
        client = LedgerClient(url or live_server.url, agent_key, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=5)


class LoopbackProxy:
    """A TCP proxy on a fixed loopback port to ``target``. While down, nothing listens on
    the port (connections are refused, as with a stopped portal); ``connections`` counts the
    connections it forwarded. ``lose_replies = n`` makes it pass the next n requests on but
    drop the portal's replies (the agent sees the connection die after sending)."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.lose_replies = 0
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        self._spawn(self._accept, listener)

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def close(self) -> None:
        self.down()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, listener: socket.socket) -> None:
        listener.settimeout(0.1)
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=30)
            with self._lock:
                self.connections += 1
                lose = self.lose_replies > 0
                self.lose_replies -= lose
            self._spawn(self._pipe, client, upstream)
            if lose:
                self._spawn(self._swallow, upstream, client)
            else:
                self._spawn(self._pipe, upstream, client)

    @staticmethod
    def _swallow(upstream: socket.socket, client: socket.socket) -> None:
        upstream.settimeout(60)
        try:
            while upstream.recv(65536):
                pass  # the portal answered; the agent never hears it
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(60)
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@pytest.fixture
def proxy(live_server: Any) -> Iterator[LoopbackProxy]:
    host, port = live_server.thread.host, live_server.thread.port
    proxy = LoopbackProxy((host, port))
    yield proxy
    proxy.close()


@pytest.fixture(autouse=True)
def _dead_letters_in_the_test_folder(tmp_path: Any, monkeypatch: Any) -> Any:
    """Each test's clients set aside what they cannot deliver in its own folder."""
    path = tmp_path / "dead-letter.jsonl"
    monkeypatch.setenv("LEDGER_DEAD_LETTER_FILE", str(path))
    return path


@pytest.fixture
def dead_letter_file(_dead_letters_in_the_test_folder: Any) -> Any:
    """Where this test's clients write what they set aside."""
    return _dead_letters_in_the_test_folder
