"""The layer rule of docs/architecture.md, enforced on the source: every ``posekit`` import of every module (at the
top of the file or inside a function) points to the same layer or one below, and no two modules import each other,
directly or through others. The layer table lives in the docs; this test reads it from there."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "posekit"
DOC = REPO / "docs" / "architecture.md"


def doc_layers(text: str) -> dict[str, int]:
    """``unit -> layer`` from the rows ``| 3 | `codecs` | ... |`` of the layer table under '## Layers'."""
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int] = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s*\|(.*?)\|", line)
        if m:
            for unit in re.findall(r"`([a-z_]+)`", m.group(2)):
                layers[unit] = int(m.group(1))
    return layers


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def unit_of(module: str) -> str:
    """The unit a module belongs to: the first name below ``posekit`` (a sub-package or a top-level module);
    ``posekit`` itself for the package's ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "posekit"


def posekit_imports(me: str, path: Path) -> list[tuple[str, int]]:
    """``(imported module, line)`` for every import of a posekit module in module ``me`` (file ``path``), relative
    ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py" or (PACKAGE / Path(*me.split(".")[1:]) / "__init__.py").is_file()
    package = me if is_package else me.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "posekit"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "posekit":
                continue
            # from pkg import name: name may be a module of pkg or an attribute of it
            out += [(f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target, node.lineno)
                    for a in node.names]
    return out


def _is_module(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").is_file() or (PACKAGE / rel / "__init__.py").is_file()


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def resolve(target: str, modules: dict[str, Path]) -> str | None:
    """The posekit module an import names (``pkg.mod.attr`` -> ``pkg.mod``), None if it names none."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def layer_violations(layers: dict[str, int], modules: dict[str, Path]) -> list[str]:
    bad = []
    for mod, path in modules.items():
        src = unit_of(mod)
        for target, line in posekit_imports(mod, path):
            dst = unit_of(target)
            if src == dst:
                continue  # imports inside a unit: see import_cycles
            if dst not in layers:
                bad.append(f"{mod}:{line} imports {target}: unit {dst!r} is not in the layer table")
            elif layers[dst] > layers[src]:
                bad.append(f"{mod}:{line} imports {target}: {dst} (layer {layers[dst]}) is above {src} "
                           f"(layer {layers[src]})")
    return bad


def import_cycles(modules: dict[str, Path]) -> list[list[str]]:
    """Strongly connected components (more than one module) of the module import graph."""
    graph = {m: set() for m in modules}
    for mod, path in modules.items():
        for target, _ in posekit_imports(mod, path):
            dst = resolve(target, modules)
            if dst and dst != mod and not mod.startswith(dst + "."):  # a sub-module importing its package is fine
                graph[mod].add(dst)
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return comps


def test_layer_table_covers_every_unit():
    layers = doc_layers(DOC.read_text())
    units = {unit_of(m) for m in all_modules()}
    assert units - set(layers) == set(), f"docs/architecture.md's layer table misses {sorted(units - set(layers))}"
    assert set(layers) - units == set(), f"the layer table names units that do not exist: {sorted(set(layers) - units)}"


def test_imports_point_down():
    bad = layer_violations(doc_layers(DOC.read_text()), all_modules())
    assert not bad, "imports against docs/architecture.md's layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    cycles = import_cycles(all_modules())
    assert not cycles, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_the_checker_catches_a_forbidden_import(tmp_path):
    """The same checks on the package with one upward import added inside a function (export -> pipelines) and one
    cycle (models.topdown <-> models.checkpoints): both are reported, naming the module and the line."""
    modules = all_modules()
    layers = doc_layers(DOC.read_text())
    upward = tmp_path / "onnx.py"
    text = modules["posekit.export.onnx"].read_text()
    upward.write_text(text + "\n\ndef _upward():\n    from posekit.pipelines.bottomup import PafPipeline\n")
    bad = layer_violations(layers, dict(modules, **{"posekit.export.onnx": upward}))
    line = len(text.splitlines()) + 4
    assert bad == [f"posekit.export.onnx:{line} imports posekit.pipelines.bottomup: pipelines (layer "
                   f"{layers['pipelines']}) is above export (layer {layers['export']})"]

    cyclic = tmp_path / "topdown.py"  # checkpoints.model_family imports models.topdown
    cyclic.write_text(modules["posekit.models.topdown"].read_text() + "\nfrom posekit.models import checkpoints\n")
    cycles = import_cycles(dict(modules, **{"posekit.models.topdown": cyclic}))
    assert any({"posekit.models.topdown", "posekit.models.checkpoints"} <= set(c) for c in cycles), cycles


@pytest.mark.parametrize("text, unit, layer", [("| 3 | `codecs` | x |", "codecs", 3),
                                                ("| 0 | `schema`, `boxes` | y |", "boxes", 0)])
def test_doc_table_parser(text, unit, layer):
    assert doc_layers("## Layers\n\n" + text + "\n\n## Next\n| 9 | `late` |")[unit] == layer
