"""Rules on the shape of the grading core's code (issue 11), checked over the AST of dsa_cast/*.py:

* no module uses another module's ``_``-prefixed name (imported, read from an imported module, or
  read as an attribute that only another module defines): what modules share is public or
  semi-public (documented as internal), so a private name can change with its own module only;
* no function is longer than :data:`MAX_LINES` lines unless its docstring says why, with a
  sentence starting with :data:`KEPT_MARKER`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dsa_cast

PACKAGE = Path(dsa_cast.__file__).resolve().parent
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_LINES = 60
KEPT_MARKER = "Kept as one function:"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), str(path))


def _defined_private(tree: ast.Module) -> set[str]:
    """Every ``_`` name a module defines: module-level and class-level names, functions and
    methods, and ``self._x = ...`` attributes."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return {n for n in out if _private(n)}


DEFINED = {path.stem: _defined_private(_tree(path)) for path in MODULES}


def _cross_module_private_uses(path: Path) -> list[str]:
    tree = _tree(path)
    own = DEFINED[path.stem]
    elsewhere = set().union(*(names for stem, names in DEFINED.items() if stem != path.stem)) - own
    modules: set[str] = set()  # local names bound to dsa_cast modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dsa_cast":
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"line {node.lineno}: from {node.module} import {alias.name}")
                if node.module == "dsa_cast":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "dsa_cast":
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            base = ast.unparse(node.value)
            if base in modules or base.split(".")[0] == "dsa_cast":
                found.append(f"line {node.lineno}: {base}.{node.attr} (another module's private name)")
            elif base not in ("self", "cls") and node.attr in elsewhere:
                found.append(f"line {node.lineno}: {base}.{node.attr} (defined only in another module)")
    return found


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_no_module_uses_another_modules_private_names(path: Path) -> None:
    assert _cross_module_private_uses(path) == []


def test_the_private_name_check_finds_what_it_should(tmp_path: Path) -> None:
    """The check itself: an import, a module attribute and an attribute defined elsewhere."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from dsa_cast.numbers import _dec_value\n"
        "from dsa_cast import claims\n"
        "x = claims._fast_value\n"
        "def f(schema):\n"
        "    return schema._heading_parts\n",
        encoding="utf-8",
    )
    DEFINED["bad"] = _defined_private(_tree(bad))
    try:
        found = _cross_module_private_uses(bad)
    finally:
        del DEFINED["bad"]
    assert len(found) == 3, found


def _long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_LINES and KEPT_MARKER not in (ast.get_docstring(node) or ""):
                out.append(f"{node.name} (line {node.lineno}): {lines} lines")
    return out


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_long_functions_state_why_they_are_kept(path: Path) -> None:
    """Over MAX_LINES lines (def to last line, docstring included), a function's docstring holds
    a sentence starting "Kept as one function:" giving the reason (e.g. measured speed)."""
    assert _long_functions(path) == []
