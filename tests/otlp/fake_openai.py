"""A small OpenAI-compatible chat completions server on loopback, for the real ``openai`` client
and its instrumentations: the first question gets a tool call back, the tool's answer a text."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "gpt-4o-mini-2024-07-18"


@dataclass
class FakeOpenAI:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


def _completion(number: int, message: dict[str, Any], finish: str) -> dict[str, Any]:
    return {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": 1_790_000_000,
            "model": MODEL, "system_fingerprint": "fp_test",
            "choices": [{"index": 0, "message": message, "finish_reason": finish,
                         "logprobs": None}],
            "usage": {"prompt_tokens": 40 + number, "completion_tokens": 9,
                      "total_tokens": 49 + number}}


def answer(body: dict[str, Any], number: int) -> dict[str, Any]:
    tool_results = [m for m in body.get("messages", []) if m.get("role") == "tool"]
    if not tool_results:
        return _completion(number, {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_w1", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}]},
            "tool_calls")
    weather = json.loads(tool_results[-1]["content"])
    return _completion(number, {"role": "assistant",
                                "content": f"It is {weather['temperature_c']} C in Paris."},
                       "stop")


@contextmanager
def fake_openai() -> Iterator[FakeOpenAI]:
    server_state = FakeOpenAI(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            server_state.requests.append(body)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self.send_error(404)
                return
            data = json.dumps(answer(body, len(server_state.requests))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server_state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
