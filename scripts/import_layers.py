"""The import graph of ledger-portal's own code, read against its layers.

    python scripts/import_layers.py            # the report: layers, app-to-app imports, breaks
    python scripts/import_layers.py --json     # the same as data

From the bottom: the core (tenancy, roles, keys, canonical JSON, signing, job plumbing), the
ledger (``runs``: records, ingestion, chain and integrity, retention), governance
(``policies``, ``approvals``), operations (replays, rollbacks, tool connectors), oversight
(``incidents``, ``exports``), and the project shell on top (settings, URLs, the CLI
dispatcher, Celery's app, the demo seeder). A module may import its own layer and those below;
an import that runs up the stack is a break, wherever it sits (module top or inside a function).

The agent client (``ledger_client``, in ``client/src``) is a distribution of its own and stands
outside the stack: it imports nothing of the portal, and nothing of the portal imports it (the
portal does not depend on it). An import across that line, either way, is a break too.
``tests/test_layers.py`` fails on any break.
"""

from __future__ import annotations

import ast
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "runs", "policies", "approvals", "operations", "incidents", "exports",
            "ledger_portal")
LAYERS = ("core", "ledger", "governance", "operations", "oversight", "project")
PACKAGE_LAYER = {"core": "core", "runs": "ledger", "policies": "governance",
                 "approvals": "governance", "operations": "operations",
                 "incidents": "oversight", "exports": "oversight", "ledger_portal": "project"}
#: The agent client: its own distribution, outside the stack (its sources under CLIENT_SRC).
CLIENT = "ledger_client"
CLIENT_SRC = Path("client", "src")


@dataclass(frozen=True, order=True)
class Import:
    importer: str
    imported: str
    line: int
    in_function: bool

    @property
    def break_text(self) -> str:
        return f"{self.importer} -> {self.imported}"


def layer_of(module: str) -> str:
    if module.split(".")[0] == CLIENT:
        return "client"  # outside the stack: see crossings()
    if ".management.commands." in module:
        return "project"
    return PACKAGE_LAYER[module.split(".")[0]]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of our packages and of the client but migrations (they refer to models by
    name only)."""
    found: dict[str, Path] = {}
    folders = [(root, root / package) for package in PACKAGES]
    folders.append((root / CLIENT_SRC, root / CLIENT_SRC / CLIENT))
    for base, folder in folders:
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            if "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _targets(node: ast.AST, module: str, is_package: bool, known: dict[str, Path]
             ) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - node.level + 1]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    # ``from pkg import module`` imports that module; ``from module import name``, the module
    return [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
            for alias in node.names]


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def imports(root: Path = ROOT) -> list[Import]:
    known = modules(root)
    found: set[Import] = set()
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = [n for n in ast.walk(tree)
                     if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        nested = {id(child) for f in functions for child in ast.walk(f)}
        for node in ast.walk(tree):
            for target in _targets(node, module, path.name == "__init__.py", known):
                resolved = _resolve(target, known)
                if resolved and resolved != module:
                    found.add(Import(module, resolved, node.lineno,  # type: ignore[attr-defined]
                                     id(node) in nested))
    # one entry per (importer, imported): the first place it happens
    first: dict[tuple[str, str], Import] = {}
    for item in sorted(found):
        first.setdefault((item.importer, item.imported), item)
    return sorted(first.values())


def upward(graph: list[Import]) -> list[Import]:
    """Imports from a layer of the portal's stack into a higher one."""
    rank = {layer: n for n, layer in enumerate(LAYERS)}
    return [i for i in graph if "client" not in (layer_of(i.importer), layer_of(i.imported))
            and rank[layer_of(i.imported)] > rank[layer_of(i.importer)]]


def crossings(graph: list[Import]) -> list[Import]:
    """Imports between the client and the portal, either way: there must be none."""
    return [i for i in graph
            if (layer_of(i.importer) == "client") != (layer_of(i.imported) == "client")]



def app_edges(graph: list[Import]) -> Counter[tuple[str, str]]:
    return Counter((layer_app(i.importer), layer_app(i.imported)) for i in graph
                   if layer_app(i.importer) != layer_app(i.imported))


def layer_app(module: str) -> str:
    return "project" if layer_of(module) == "project" else module.split(".")[0]


def report(graph: list[Import]) -> str:
    lines = ["Layers, bottom first:"]
    for layer in LAYERS:
        apps = sorted({layer_app(m) for m in modules() if layer_of(m) == layer})
        lines.append(f"  {layer:<11} {', '.join(apps)}")
    lines.append(f"  {'outside':<11} {CLIENT} (the agent client, {CLIENT_SRC}; imports nothing "
                 "of the portal, nor the portal of it)")
    lines.append("")
    lines.append("Imports between apps (modules importing, both at module top and inside "
                 "functions):")
    for (importer, imported), count in sorted(app_edges(graph).items()):
        lines.append(f"  {importer:>13} -> {imported:<13} {count}")
    up, across = upward(graph), crossings(graph)
    inside = sum(1 for i in graph if i.in_function and layer_app(i.importer) != layer_app(
        i.imported))
    lines.append("")
    lines.append(f"{len(graph)} imports between our modules; {inside} across apps inside "
                 f"functions; {len(up)} run up the stack:")
    lines += [_where(i) for i in up]
    lines.append(f"{len(across)} between the client and the portal:")
    lines += [_where(i) for i in across]
    return "\n".join(lines)


def _where(i: Import) -> str:
    return (f"  {i.break_text}  ({modules()[i.importer].relative_to(ROOT)}:{i.line}"
            f"{', in a function' if i.in_function else ''})")


def main() -> None:
    graph = imports()
    if "--json" in sys.argv:
        print(json.dumps({"layers": LAYERS, "imports": [i.__dict__ for i in graph],
                          "upward": [i.break_text for i in upward(graph)],
                          "crossings": [i.break_text for i in crossings(graph)]}, indent=1))
    else:
        print(report(graph))


if __name__ == "__main__":
    main()
