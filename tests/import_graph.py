"""The import graph between scones' layers, and the arrows that point the wrong way.

    python tests/import_graph.py     # prints each layer's imports of the others; exits 1 on an upward arrow

Layers, lowest first: the package root (scones/: settings, contract); the code that ships on its
own (lambdas/ in the Lambda zip, local_model/ as the SageMaker source directory, state_machine/);
deploy/; harness/; scones/testing.py (what tests and benchmarks use: nothing shipped imports it). A module may
import its own layer and those below it. lambdas/ and
local_model/ import nothing of scones at all: where they run, scones is not installed.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parent.parent
FOLDERS = {"scones": "scones", "lambdas": "scones.lambdas", "local_model": "scones.local_model",
           "state_machine": "scones.state_machine", "deploy": "scones.deploy", "harness": "scones.harness"}
RANK = {"scones": 0, "scones.lambdas": 1, "scones.local_model": 1, "scones.state_machine": 1,
        "scones.deploy": 2, "scones.harness": 3, "scones.testing": 4}
SELF_CONTAINED = {"scones.lambdas", "scones.local_model"}


def layer_of(module: str) -> str | None:
    """The layer a dotted scones module name belongs to (None: not scones)."""
    parts = module.split(".")
    if parts[0] != "scones":
        return None
    if len(parts) > 1 and f"scones.{parts[1]}" in RANK:
        return f"scones.{parts[1]}"
    return "scones"


def imports_of(path: Path, package: str) -> set[str]:
    """Absolute names of the modules a file imports, relative imports resolved against its package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.update(f"{node.module}.{alias.name}" if node.module == "scones" else node.module
                             for alias in node.names)
    return found


def graph(root: Path = CHECKOUT) -> dict[str, dict[str, set[str]]]:
    """layer -> imported layer -> the files making that arrow."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for folder, package in FOLDERS.items():
        for path in sorted((root / folder).rglob("*.py")):
            inner = path.relative_to(root / folder).with_suffix("").parts
            module_package = ".".join([package, *inner[:-1]])
            source = layer_of(".".join([package, *inner]))
            for name in imports_of(path, module_package):
                target = layer_of(name)
                if target and source and target != source:
                    edges[source][target].add(str(path.relative_to(root)))
    return edges


def wrong_way(edges: dict[str, dict[str, set[str]]]) -> list[str]:
    problems = []
    for source, targets in edges.items():
        for target, files in targets.items():
            if source in SELF_CONTAINED or RANK[target] >= RANK[source]:
                problems.append(f"{source} -> {target}: {', '.join(sorted(files))}")
    return problems


def main() -> int:
    edges = graph()
    for source in sorted(RANK, key=RANK.get):
        targets = edges.get(source, {})
        listed = ", ".join(f"{target} ({len(files)} files)" for target, files in sorted(targets.items())) or "nothing"
        print(f"{source:22} (layer {RANK[source]}) imports {listed}")
    problems = wrong_way(edges)
    for problem in problems:
        print(f"wrong way: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
