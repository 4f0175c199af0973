"""The import layers, in one direction (README "Architecture"):

- the contract (`adapters/api/`) imports nothing of nfebench outside itself;
- a family (any other module under `adapters/`, and the example plug-in) imports the contract and
  the families' shared library, never the orchestration (`harness`);
- the orchestration (`harness/`, `benchmarks/`) reaches a family only through the registry: it
  imports `adapters` (the package, which re-exports the registry) and `adapters.api`, and names no
  family module, not even in an ``import_module`` string.

Read from the source with `ast`, so a lazy import inside a function counts like a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = "adapters.api"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import statement and every import_module("...") call in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            out += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names
                                            if (ROOT / Path(*f"{base}.{alias.name}".split("."))).is_dir()
                                            or (ROOT / Path(*f"{base}.{alias.name}".split("."))).with_suffix(".py").exists()]
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append((node.lineno, node.args[0].value))
    return out


def ours(name: str) -> bool:
    return name.split(".")[0] in ("adapters", "harness")


def sources(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def violations(paths: list[Path], allowed) -> list[str]:
    return [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in paths for line, name in imports_of(p)
            if ours(name) and not allowed(name)]


def in_contract(name: str) -> bool:
    return name == CONTRACT or name.startswith(CONTRACT + ".")


def test_the_contract_imports_nothing_of_nfebench_but_itself():
    assert violations(sources("adapters/api"), in_contract) == []


def test_families_never_import_the_orchestration():
    families = [p for p in sources("adapters") if not p.is_relative_to(ROOT / "adapters/api")]
    families += sources("examples")
    assert violations(families, lambda name: name.split(".")[0] == "adapters") == []


@pytest.mark.parametrize("folder", ["harness", "benchmarks"])
def test_the_orchestration_reaches_families_only_through_the_registry(folder):
    assert violations(sources(folder), lambda name: name.startswith("harness") or name == "adapters"
                      or in_contract(name)) == []


def test_the_layer_rules_catch_what_they_forbid(tmp_path):
    """The rules are not vacuous: imports of each forbidden kind are found."""
    code = ("import harness.results\nfrom adapters.sit import model\nfrom adapters import load_sampler\n"
            "from importlib import import_module\nimport_module('adapters.imf.jax_port')\n")
    path = ROOT / "harness" / "_layer_probe.py"
    path.write_text(code)
    try:
        names = [n for _, n in imports_of(path)]
    finally:
        path.unlink()
    assert {"harness.results", "adapters.sit", "adapters.sit.model", "adapters", "adapters.imf.jax_port"} <= set(names)
    assert not in_contract("adapters.sit") and in_contract("adapters.api.sampler")
