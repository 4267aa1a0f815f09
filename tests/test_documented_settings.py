"""Every environment variable a process reads is in docs/configuration.md (or, for the
processes' own plumbing, docs/operations.md): a setting nobody can find is one nobody sets
right."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READERS = [ROOT / "ledger_portal" / "settings.py", ROOT / "deploy" / "gunicorn.conf.py"]
READ = re.compile(r"""(?:env_\w+\(\s*|os\.environ(?:\.get)?[\[(]\s*)["']([A-Z][A-Z0-9_]+)["']""")


def variables_read() -> set[str]:
    return {name for path in READERS for name in READ.findall(path.read_text())}


def test_every_variable_the_processes_read_is_documented():
    documented = (ROOT / "docs" / "configuration.md").read_text() + (
        ROOT / "docs" / "operations.md").read_text()
    read = variables_read()
    assert len(read) >= 60  # the pattern still finds what settings.py reads
    assert sorted(name for name in read if f"`{name}`" not in documented) == []
