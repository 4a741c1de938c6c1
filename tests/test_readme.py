"""The README's Python examples, and the notebooks' sources, match the API they show.

The examples load Hub models this machine cannot download, so they are not run here; the
notebooks run on the embedded models (tests/test_notebooks.py), but their real-model branches
(a GPU, the Hub) never run in CI. What can drift silently is checked instead: every block and
source compiles, every name it imports from hf_slug exists, and every call of an hf_slug
function or class binds to its signature (argument count and keyword names), so a renamed or
moved keyword fails here whichever branch it sits in.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.M | re.S)
NOTEBOOK_SOURCES = sorted((README.parent / "notebooks" / "src").glob("*.py"))


def _hf_slug_names(tree: ast.Module) -> dict[str, object]:
    """Local name -> object for every `from hf_slug... import name` in the block."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hf_slug"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


def _callee(node: ast.Call, names: dict[str, object]) -> object | None:
    """The hf_slug object a call calls: `name(...)` or `Name.attribute(...)`."""
    func = node.func
    if isinstance(func, ast.Name):
        return names.get(func.id)
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner = names.get(func.value.id)
        if inspect.isclass(owner):
            return getattr(owner, func.attr, None)
    return None


def test_the_readme_and_notebooks_have_python_examples() -> None:
    assert len(BLOCKS) >= 5, "the README's examples were not found (```python blocks)"
    assert len(NOTEBOOK_SOURCES) >= 3, "the notebooks' sources were not found"


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=lambda i: f"block{i + 1}")
def test_readme_example_binds_to_the_api(index: int) -> None:
    check_binds(BLOCKS[index], f"README block {index + 1}")


@pytest.mark.parametrize("path", NOTEBOOK_SOURCES, ids=lambda p: p.name)
def test_notebook_source_binds_to_the_api(path: Path) -> None:
    check_binds(path.read_text(encoding="utf-8"), f"notebooks/src/{path.name}")


def check_binds(source: str, where: str) -> None:
    """Fail unless every hf_slug call in `source` binds to its signature."""
    tree = ast.parse(source)  # a syntax error fails here
    names = _hf_slug_names(tree)
    checked = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        target = _callee(node, names)
        if target is None or not callable(target):
            continue
        signature = inspect.signature(target)
        if inspect.isfunction(target) and getattr(target, "__qualname__", "").count("."):
            signature = signature.replace(parameters=list(signature.parameters.values())[1:])
        args = [object()] * len(node.args)
        keywords = {k.arg: object() for k in node.keywords if k.arg is not None}
        named = {p.name for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD}
        try:
            unknown = sorted(set(keywords) - named)  # **kwargs catch-alls do not excuse a name
            if unknown:
                raise TypeError(f"no parameter named {unknown}")
            signature.bind(*args, **keywords)
        except TypeError as error:
            line = source.splitlines()[node.lineno - 1].strip()
            pytest.fail(f"{where}, line {node.lineno} `{line}`: {error}")
        checked += 1
    if names:
        assert checked, f"{where} imports from hf_slug but calls none of it"
