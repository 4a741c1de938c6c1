"""Build notebooks/<name>.ipynb from its source notebooks/src/<name>.py (clean: no outputs).

The sources are Python files in the "percent" format that jupytext reads: `# %%` starts a code
cell, `# %% [markdown]` a markdown cell whose lines are comments (`# ` + the markdown line, `#`
for a blank one); anything above the first `# %%` is a header that stays out of the notebook.
ruff checks and formats them like any code (notebooks/src/ruff.toml). After editing a source:

    bash scripts/venv.sh python scripts/make_notebooks.py          # rewrite every notebook
    bash scripts/venv.sh python scripts/make_notebooks.py --check  # exit 1 if one is out of date

The output is deterministic (no outputs, no execution counts, cell ids derived from each cell's
content), so rebuilding unchanged sources rewrites identical files. tests/test_notebooks.py
executes the notebooks; tests/test_notebook_sources.py runs --check.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks" / "src"
NOTEBOOKS = ROOT / "notebooks"
CODE, MARKDOWN = "# %%", "# %% [markdown]"
METADATA = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def parse(text: str, where: str = "<source>") -> list[tuple[str, str]]:
    """Split percent-format text into (kind, source) cells; `where` names the file in errors."""
    cells: list[tuple[str, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("# %%"):
            if line.rstrip() not in (CODE, MARKDOWN):
                raise ValueError(
                    f"{where}:{number}: unsupported cell marker {line!r}: start a cell with "
                    f"{CODE!r} (code) or {MARKDOWN!r} (markdown) and nothing else on the line"
                )
            cells.append(("markdown" if line.rstrip() == MARKDOWN else "code", []))
        elif not cells:
            continue  # the header above the first cell
        elif cells[-1][0] == "markdown":
            if line.strip() and not (line == "#" or line.startswith("# ")):
                raise ValueError(
                    f"{where}:{number}: markdown line {line!r} is not a comment: write every "
                    f"line of a markdown cell as '# ' + the line ('#' for a blank line), or "
                    f"start a code cell with {CODE!r} above it"
                )
            cells[-1][1].append(line[2:] if line.startswith("# ") else "")
        else:
            cells[-1][1].append(line)
    if not cells:
        raise ValueError(
            f"{where}: no cell: start the first cell with {CODE!r} or {MARKDOWN!r} on a line "
            "of its own"
        )
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def cell_id(kind: str, source: str, taken: set[str]) -> str:
    """A stable id from the cell's content (8 hex digits; `-2`, `-3`... for repeated cells)."""
    base = hashlib.sha256(f"{kind}\0{source}".encode()).hexdigest()[:8]
    unique, n = base, 1
    while unique in taken:
        n += 1
        unique = f"{base}-{n}"
    taken.add(unique)
    return unique


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    """A clean nbformat 4.5 notebook: no outputs or execution counts, content-derived ids."""
    taken: set[str] = set()
    notebook = new_notebook(metadata=METADATA)
    for kind, source in cells:
        make = new_markdown_cell if kind == "markdown" else new_code_cell
        notebook.cells.append(make(source, id=cell_id(kind, source, taken)))
    nbformat.validate(notebook)
    return notebook


def render(source: Path) -> str:
    """The .ipynb text built from one percent-format source file."""
    cells = parse(source.read_text(encoding="utf-8"), where=str(source))
    return nbformat.writes(build(cells)) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write (or with --check, compare) every notebook; 1 when one is stale, 2 on a bad source."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check they are up to date")
    parser.add_argument("--src", type=Path, default=SOURCES, help="folder of <name>.py sources")
    parser.add_argument("--out", type=Path, default=NOTEBOOKS, help="folder of <name>.ipynb")
    args = parser.parse_args(argv)
    sources = sorted(args.src.glob("*.py"))
    if not sources:
        print(
            f"error: no notebook source in {args.src}: add <name>.py files there", file=sys.stderr
        )
        return 2
    stale = []
    for source in sources:
        path = args.out / f"{source.stem}.ipynb"
        try:
            text = render(source)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        if args.check:
            if not path.exists():
                stale.append(f"{path} (missing)")
            elif path.read_text(encoding="utf-8") != text:
                stale.append(f"{path} (differs from {source})")
        else:
            path.write_text(text, encoding="utf-8", newline="\n")
            print(f"wrote {path}")
    names = {source.stem for source in sources}
    orphans = [p for p in sorted(args.out.glob("*.ipynb")) if p.stem not in names]
    stale += [f"{p} (no source: add {args.src / (p.stem + '.py')})" for p in orphans]
    if stale:
        print("out of date (run scripts/make_notebooks.py):", *stale, sep="\n  ", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
