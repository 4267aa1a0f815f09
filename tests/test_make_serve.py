"""`make serve`, the documented production command: migrations, static files collected and
served by WhiteNoise, gunicorn with the repository's config, DEBUG off, on the embedded
default."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read(), dict(refused.headers)


def test_make_serve_runs_the_portal_as_deployed(tmp_path):
    port = _free_port()
    env = {**os.environ, "LEDGER_DATA_DIR": str(tmp_path), "DEBUG": "0", "LEDGER_HTTPS": "0",
           "SECRET_KEY": "test-" + "k" * 60, "LEDGER_BIND": f"127.0.0.1:{port}",
           "WEB_CONCURRENCY": "1", "ALLOWED_HOSTS": "127.0.0.1",
           "LEDGER_BIN": str(Path(sys.executable).parent),
           "VENV": str(Path(sys.executable).parent.parent)}
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        # -o: the venv counts as installed (a newer pyproject would reinstall within the wait)
        server = subprocess.Popen(["make", "-s", "-o", f"{env['VENV']}/.installed", "serve",
                                   f"VENV={env['VENV']}"], cwd=ROOT,
                                  env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status, _, _ = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert server.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.3)
        assert status == 200
        status, body, headers = _get(f"http://127.0.0.1:{port}/static/admin/css/base.css")
        assert status == 200, log.read_text()[-2000:]
        assert b"{" in body
        assert "max-age" in headers.get("Cache-Control", "")  # WhiteNoise's, not Django's
        status, body, _ = _get(f"http://127.0.0.1:{port}/no-such-page/")
        assert status == 404
        assert b"Traceback" not in body  # DEBUG is off
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
