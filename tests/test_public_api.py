"""The benchmarks use only hf_slug's public API (issue 13, item 5).

Each `benchmarks/*.py` is read with `ast`: importing a private name from hf_slug
(`from hf_slug.gradients import _helper`) or reaching one through an imported hf_slug module or
name (`hf_slug.search._step`, `import hf_slug.io as io; io._x`, `SLUGModel._sum`) fails, with
every offender listed. A benchmark's own private names (`self._thread`, helpers of its folder)
are its business. Signature sizes are checked by `tests/test_architecture.py`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FILES = sorted(p.name for p in BENCHMARKS.glob("*.py"))

KNOWN_PRIVATE: dict[tuple[str, str], str] = {
    # (file, hf_slug name): why it is still used. A fixed entry must leave the list.
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, dotted hf_slug name) for every private hf_slug name `source` imports or reads."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}  # local name -> the hf_slug module or object it stands for
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "hf_slug" or alias.name.startswith("hf_slug."):
                    parts = alias.name.split(".")
                    if any(_private(p) for p in parts):
                        found.append((node.lineno, alias.name))
                    local = alias.asname or parts[0]
                    bound[local] = alias.name if alias.asname else parts[0]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            module = node.module or ""
            if module != "hf_slug" and not module.startswith("hf_slug."):
                continue
            for alias in node.names:
                full = f"{module}.{alias.name}"
                if any(_private(p) for p in full.split(".")):
                    found.append((node.lineno, full))
                bound[alias.asname or alias.name] = full
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            chain, base = [node.attr], node.value
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                found.append((node.lineno, ".".join([bound[base.id], *reversed(chain)])))
    return sorted(set(found))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from hf_slug.gradients import _f, g", [(1, "hf_slug.gradients._f")]),
        ("from hf_slug import search\nsearch._step()", [(2, "hf_slug.search._step")]),
        ("import hf_slug.io as io\nio._x", [(2, "hf_slug.io._x")]),
        ("import hf_slug.search\nhf_slug.search._step", [(2, "hf_slug.search._step")]),
        ("from hf_slug import SLUGModel\nSLUGModel(m)._sum", []),  # an instance: not followed
        ("from hf_slug import SLUGModel\nSLUGModel._sum", [(2, "hf_slug.SLUGModel._sum")]),
        ("from hf_slug._private import x", [(1, "hf_slug._private.x")]),
        ("from common import _helper\nself._thread = 1", []),
        ("from hf_slug import unlearn\nunlearn.__doc__", []),
        ("from .local import _x", []),
    ],
    ids=[
        "import-private", "module-attribute", "aliased-module", "dotted-module", "instance",
        "class-attribute", "private-module", "own-privates", "dunder", "relative",
    ],
)  # fmt: skip
def test_private_use_reader(source: str, expected: list[tuple[int, str]]) -> None:
    assert private_uses(source) == expected


@pytest.mark.parametrize("name", FILES, ids=FILES)
def test_benchmarks_use_only_public_names(name: str) -> None:
    uses = private_uses((BENCHMARKS / name).read_text(encoding="utf-8"))
    offenders = [
        f"{name}:{line}: {used}" for line, used in uses if (name, used) not in KNOWN_PRIVATE
    ]
    assert not offenders, (
        "benchmarks must use hf_slug's public API; use a public function or give the library "
        "one:\n  " + "\n  ".join(offenders)
    )


def test_known_private_uses_are_still_there() -> None:
    """An allow-listed private use that is gone must leave KNOWN_PRIVATE too."""
    used = {
        (name, dotted)
        for name in FILES
        for _, dotted in private_uses((BENCHMARKS / name).read_text(encoding="utf-8"))
    }
    fixed = sorted(pair for pair in KNOWN_PRIVATE if pair not in used)
    assert not fixed, f"{fixed} no longer use a private name: remove them from KNOWN_PRIVATE"
