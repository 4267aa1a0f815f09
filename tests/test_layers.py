"""The code forms a stack: core, ledger, governance, operations, oversight, project. No module
imports from a layer above its own, at its top or inside a function (the report:
``python scripts/import_layers.py``). What a lower layer needs from a higher one it gets
through a hook it owns (hold sources, the decision trail, timeline panels, incident links, the
governance log recorder, the admin's content presenter). The agent client stands outside the
stack: it and the portal import nothing of each other."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

from scripts import import_layers as layers


def test_no_import_runs_up_the_stack():
    breaks = layers.upward(layers.imports())
    assert breaks == [], "\n" + "\n".join(
        f"{b.break_text} ({layers.modules()[b.importer].relative_to(layers.ROOT)}:{b.line})"
        for b in breaks)


def test_every_package_of_ours_has_a_layer():
    ours = {path.parent.name for path in layers.ROOT.glob("*/apps.py")}
    assert ours <= set(layers.PACKAGE_LAYER)
    assert set(layers.PACKAGES) == set(layers.PACKAGE_LAYER)


def test_the_project_shell_is_only_wiring():
    """Settings, URLs, the CLI dispatcher, Celery's app: nothing below imports them."""
    into_shell = [i.break_text for i in layers.imports()
                  if layers.layer_of(i.imported) == "project"
                  and layers.layer_of(i.importer) != "project"]
    assert into_shell == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for package in [*layers.PACKAGES, str(layers.CLIENT_SRC / layers.CLIENT)]:
        (tmp_path / package).mkdir(parents=True, exist_ok=True)
        (tmp_path / package / "__init__.py").touch()
    return tmp_path


def test_the_check_finds_an_upward_import_inside_a_function(tmp_path):
    root = _tree(tmp_path, {
        "runs/retention.py": """
            from .models import Run

            def held():
                from policies.models import Decision
                return Decision
        """,
        "runs/models.py": "",
        "policies/models.py": "from runs.models import Run\n",
    })
    found = layers.upward(layers.imports(root))
    assert [(i.break_text, i.in_function) for i in found] == [
        ("runs.retention -> policies.models", True)]


def test_the_check_resolves_relative_imports_and_submodules(tmp_path):
    root = _tree(tmp_path, {
        "operations/api/replays.py": "from ..replay import start\nfrom . import views\n",
        "operations/api/views.py": "",
        "operations/replay.py": "from incidents import services\n",
        "incidents/services.py": "",
    })
    graph = {(i.importer, i.imported) for i in layers.imports(root)}
    assert {("operations.api.replays", "operations.replay"),
            ("operations.api.replays", "operations.api.views"),
            ("operations.replay", "incidents.services")} <= graph
    assert [i.break_text for i in layers.upward(layers.imports(root))] == [
        "operations.replay -> incidents.services"]


def test_the_client_and_the_portal_import_nothing_of_each_other():
    """The client (client/, a distribution of its own) installs without the portal, and the
    portal runs without the client."""
    graph = layers.imports()
    assert {m for m in layers.modules() if layers.layer_of(m) == "client"} >= {
        "ledger_client", "ledger_client.recording", "ledger_client.sender"}
    assert any(i.importer.startswith("ledger_client.") for i in graph)  # the client is read
    assert [i.break_text for i in layers.crossings(graph)] == []


def test_the_client_imports_only_the_standard_library():
    """Its pyproject.toml has no dependencies; nothing of it may need one."""
    foreign = []
    for module, path in layers.modules().items():
        if layers.layer_of(module) != "client":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom)
                     and not node.level else [])
            foreign += [f"{module}: {name}" for name in names
                        if name.split(".")[0] not in {*sys.stdlib_module_names, "__future__",
                                                      layers.CLIENT}]
    assert foreign == []


def test_the_check_finds_imports_between_the_client_and_the_portal(tmp_path):
    root = _tree(tmp_path, {
        "client/src/ledger_client/recording.py": "from .sender import Item\n",
        "client/src/ledger_client/sender.py": "def send():\n    from runs import models\n",
        "runs/models.py": "",
        "runs/ingest.py": "from ledger_client.recording import Item\n",
    })
    graph = layers.imports(root)
    assert ("ledger_client.recording", "ledger_client.sender") in {
        (i.importer, i.imported) for i in graph}
    assert [(i.break_text, i.in_function) for i in layers.crossings(graph)] == [
        ("ledger_client.sender -> runs.models", True),
        ("runs.ingest -> ledger_client.recording", False)]
    assert layers.upward(graph) == []


def test_the_report_prints_layers_graph_and_breaks():
    text = layers.report(layers.imports())
    assert "ledger      runs" in text
    assert "run up the stack" in text
    assert "0 between the client and the portal" in text
    ast.parse(Path(layers.__file__).read_text())  # runnable as a script, too


def test_neither_the_portal_nor_its_tests_import_the_benchmarks():
    """bench/ is not installed with the portal: what the demo and the tests share with the
    benchmarks (the run generator) lives in ``runs.sample_runs``."""
    importers = []
    for folder in [*layers.PACKAGES, "tests"]:
        for path in (layers.ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                if any(name == "bench" or name.startswith("bench.") for name in names):
                    importers.append(str(path.relative_to(layers.ROOT)))
    assert importers == []
