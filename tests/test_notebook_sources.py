"""The notebooks are built from linted percent-format sources (notebooks/src/*.py) by
scripts/make_notebooks.py: the committed .ipynb files match their sources, the build is
deterministic, and --check catches drift. tests/test_notebooks.py executes the notebooks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_notebooks.py"
SOURCE = "# header, not a cell\n\n# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n"


@pytest.fixture(scope="module")
def make() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_notebooks", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_notebooks_match_their_sources() -> None:
    """The CI gate: every notebooks/*.ipynb has a source and is rebuilt from it unchanged."""
    sources = {p.stem for p in (ROOT / "notebooks" / "src").glob("*.py")}
    notebooks = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert sources == notebooks == {"quickstart", "stable_diffusion", "llava"}
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("text", "cells"),
    [
        (SOURCE, [("markdown", "# Title\n\ntext"), ("code", "x = 1")]),
        (
            "# %%\n\n\ndef f():\n    return 1\n\n\n# %%\nf()\n",
            [("code", "def f():\n    return 1"), ("code", "f()")],
        ),
        ("# %% [markdown]\n#   indented\n# %%\n", [("markdown", "  indented"), ("code", "")]),
    ],
    ids=[
        "header-dropped-markdown-unprefixed",
        "blank-lines-between-cells-dropped",
        "indent-kept-empty-cell",
    ],
)
def test_parse_splits_cells(make: ModuleType, text: str, cells: list[tuple[str, str]]) -> None:
    assert make.parse(text) == cells


@pytest.mark.parametrize(
    ("text", "problem", "fix"),
    [
        ("# %% [raw]\nx\n", "unsupported cell marker", "'# %%' (code)"),
        ("# %% [markdown]\nnot a comment\n", "is not a comment", "'# ' + the line"),
        ("x = 1\n", "no cell", "start the first cell"),
    ],
    ids=["raw-marker", "markdown-line-not-comment", "no-marker"],
)
def test_parse_rejects_bad_sources(make: ModuleType, text: str, problem: str, fix: str) -> None:
    with pytest.raises(ValueError, match="nb.py") as caught:
        make.parse(text, where="nb.py")
    assert problem in str(caught.value) and fix in str(caught.value)


def test_build_is_deterministic_with_unique_ids(make: ModuleType, tmp_path: Path) -> None:
    source = tmp_path / "nb.py"
    source.write_text(SOURCE + "\n# %%\nx = 1\n", encoding="utf-8")  # a repeated cell
    first, second = make.render(source), make.render(source)
    notebook = make.nbformat.reads(first, as_version=4)
    ids = [cell.id for cell in notebook.cells]
    assert first == second and len(set(ids)) == len(ids) == 3
    assert all(cell.get("outputs", []) == [] for cell in notebook.cells)
    assert all(cell.get("execution_count") is None for cell in notebook.cells)


def _edit_source(src: Path, out: Path) -> None:
    (src / "nb.py").write_text(SOURCE.replace("x = 1", "x = 2"), encoding="utf-8")


def _drop_notebook(src: Path, out: Path) -> None:
    (out / "nb.ipynb").unlink()


def _add_orphan(src: Path, out: Path) -> None:
    (out / "hand_written.ipynb").write_text("{}", encoding="utf-8")


def _edit_notebook(src: Path, out: Path) -> None:
    path = out / "nb.ipynb"
    path.write_text(path.read_text(encoding="utf-8").replace("x = 1", "x = 3"), encoding="utf-8")


def _break_source(src: Path, out: Path) -> None:
    (src / "nb.py").write_text("# %% [markdown]\nbad\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("change", "code", "message"),
    [
        (None, 0, ""),
        (_edit_source, 1, "differs from"),
        (_edit_notebook, 1, "differs from"),
        (_drop_notebook, 1, "(missing)"),
        (_add_orphan, 1, "no source"),
        (_break_source, 2, "is not a comment"),
    ],
    ids=[
        "up-to-date",
        "source-edited",
        "notebook-hand-edited",
        "notebook-missing",
        "orphan-notebook",
        "bad-source",
    ],
)
def test_check_catches_drift(make, tmp_path, capsys, change, code, message) -> None:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "nb.py").write_text(SOURCE, encoding="utf-8")
    assert make.main(["--src", str(src), "--out", str(out)]) == 0
    if change is not None:
        change(src, out)
    capsys.readouterr()
    assert make.main(["--check", "--src", str(src), "--out", str(out)]) == code
    assert message in capsys.readouterr().err
