"""ARCHITECTURE.md, "Where the code lives": ``core`` never imports ``gateway``
or ``collector``; the process serving both transports is assembled on the
gateway side."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

FORBIDDEN = ("gateway", "collector")


def _imported_modules(tree: ast.AST) -> list[str]:
    """Every module an ``import`` or ``from … import`` names, at any depth
    (function-level imports included)."""
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_no_core_module_imports_the_gateway_or_the_collector() -> None:
    offenders = []
    sources = sorted((ROOT / "core").rglob("*.py"))
    assert len(sources) > 20  # the walk found the package
    for path in sources:
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imported_modules(tree):
            if name.split(".")[0] in FORBIDDEN:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_the_observe_command_is_assembled_on_the_gateway_side() -> None:
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["observe"].split(":")[0].split(".")[0] == "gateway"
