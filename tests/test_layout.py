"""The layout rules of DESIGN.md §2, checked on the source: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "mtnas"


def imports(path: Path) -> set[str]:
    """Every module a file imports (top level or inside functions), as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def files(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


def offenders(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for p in paths:
        bad = sorted(n for n in imports(p) if n.startswith(forbidden))
        if bad:
            found[str(p.relative_to(SRC))] = bad
    return found


@pytest.mark.parametrize(
    "paths,forbidden,why",
    [
        (files("methods"), ("mtnas.pipeline",), "methods use run.py's services, never the pipeline"),
        (
            [SRC / "pipeline.py"],
            (
                *(f"mtnas.methods.{f.stem}" for f in files("methods") if f.stem not in ("__init__", "base")),
                "mtnas.space",
                "mtnas.supernet",
                "mtnas.lit.supernet",
            ),
            "the pipeline knows no concrete method: `method._target_` names it",
        ),
        (
            files("search"),
            ("mtnas.supernet", "mtnas.space", "mtnas.nn", "mtnas.lit", "mtnas.methods"),
            "search knows no model family (cost belongs to the supernet)",
        ),
        (
            files("space") + files("supernet"),
            ("pytorch_lightning", "lightning"),
            "space/supernet know no Lightning",
        ),
        (
            [SRC / "run.py"],
            ("mtnas.methods.static", "mtnas.methods.oneshot"),
            "run.py serves every method alike",
        ),
    ],
)
def test_layout_rule(paths, forbidden, why):
    assert paths
    assert offenders(paths, forbidden) == {}, why
