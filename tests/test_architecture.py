"""The package's shape: layers that only point down, package data, module and signature sizes.

The layers, and the reason for every allow-list entry below, are in docs/architecture.md.
Imports are read with `ast`: module-level, function-level (lazy) and `if TYPE_CHECKING:` imports
all count, and importing `a.b.c` also runs the package `a.b` (its `__init__`), so that counts too
(except the root facade `hf_slug`, which every `import hf_slug.x` runs).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import hf_slug
from hf_slug.errors import AdapterError

PACKAGE = Path(hf_slug.__file__).resolve().parent
ROOT = PACKAGE.parent

LAYERS = ("base", "core", "api", "hosts", "facade", "apps")
"""Lowest first; a module may import its own layer and the ones before it."""

LAYER = {
    # base: files, errors and words; no torch model, no hf_slug type above them
    "hf_slug.errors": "base",
    "hf_slug.checks": "base",
    "hf_slug.version": "base",
    "hf_slug.io": "base",
    "hf_slug.phrasings": "base",
    "hf_slug.cache": "base",  # the per-user cache folder
    # core: the method and the delta file format; knows no search driver, host or app
    "hf_slug.options": "core",
    "hf_slug.config": "core",
    "hf_slug.config_fields": "core",  # the field checks of a loaded slug_config.json
    "hf_slug.names": "core",
    "hf_slug.resolve": "core",
    "hf_slug.data": "core",
    "hf_slug.losses": "core",
    "hf_slug.towers": "core",  # tower discovery
    "hf_slug.clip_sizes": "core",  # the one CLIPConfig builder (tests, benchmarks, embedded)
    "hf_slug.selection": "core",
    "hf_slug.gradients": "core",
    "hf_slug.null_space": "core",  # forget gradients off the retain inputs (the default)
    "hf_slug.gradient_cache": "core",  # given, cached or computed gradients; the cache file
    "hf_slug.evaluation": "core",  # the package: evaluators, metric keys, prefix cache
    "hf_slug.evaluation.base": "core",
    "hf_slug.evaluation.tasks": "core",
    "hf_slug.evaluation.zero_shot": "core",
    "hf_slug.evaluation.prefix_cache": "core",
    "hf_slug.evaluation.stacked": "core",
    "hf_slug.evaluation.early_exit": "core",
    "hf_slug.evaluation.identity": "core",
    "hf_slug.validation": "core",
    "hf_slug.search": "core",
    "hf_slug.delta": "core",
    "hf_slug.weights": "core",  # the one "add a delta in fp32, cast back" primitive
    "hf_slug.adapter_weights": "core",  # SLUGModel's hooks and weight writes
    "hf_slug.export": "core",
    "hf_slug.plots": "core",
    "hf_slug.audit_report": "core",  # the audit report file format (read by hub's model card)
    # api: the drivers a user calls on a CLIPModel, and adapters / Hub on top of deltas
    "hf_slug.unlearn": "api",
    "hf_slug.request": "api",
    "hf_slug.stacking": "api",
    "hf_slug.model": "api",
    "hf_slug.hub": "api",
    # hosts: models that carry a CLIP tower (Stable Diffusion, LLaVA)
    "hf_slug.hosts": "hosts",  # the package __init__ (a docstring)
    "hf_slug.hosts.base": "hosts",  # the Host protocol, the one driver and result type
    "hf_slug.hosts.diffusion": "hosts",
    "hf_slug.hosts.diffusion_criterion": "hosts",
    "hf_slug.hosts.denoiser_criterion": "hosts",
    "hf_slug.hosts.denoiser_memory": "hosts",
    "hf_slug.hosts.prompt_conditioning": "hosts",
    "hf_slug.hosts.pipeline_criteria": "hosts",
    "hf_slug.hosts.diffusion_export": "hosts",
    "hf_slug.hosts.generation": "hosts",
    "hf_slug.hosts.vlm": "hosts",
    "hf_slug.hosts.vlm_evaluation": "hosts",
    "hf_slug.hosts.vlm_criterion": "hosts",
    # facade: the public names, `from hf_slug import ...`
    "hf_slug": "facade",
    # apps: command line, audit, demo, tiny test models
    "hf_slug.__main__": "apps",
    "hf_slug.cli": "apps",
    "hf_slug.cli_checks": "apps",
    "hf_slug.cli_unlearn": "apps",
    "hf_slug.testing": "apps",
    "hf_slug.audit": "apps",
    "hf_slug.audit.command": "apps",
    "hf_slug.audit.hosts": "apps",
    "hf_slug.audit.phrasings": "apps",
    "hf_slug.audit.probes": "apps",
    "hf_slug.demo": "apps",
    "hf_slug.demo.novel": "apps",
    "hf_slug.demo.protocol": "apps",
    "hf_slug.demo.run": "apps",
    "hf_slug.demo.vlm": "apps",
    "hf_slug.demo.vlm_demo": "apps",
    "hf_slug.demo.pipeline_demo": "apps",
    "hf_slug.demo.t2i": "apps",
    "hf_slug.demo.world": "apps",
    "hf_slug.demo.concepts": "apps",
    "hf_slug.demo.design": "apps",
    "hf_slug.demo.draw_people": "apps",
    "hf_slug.demo.draw_things": "apps",
    "hf_slug.demo.draw_views": "apps",
    "hf_slug.demo.folders": "apps",
}

KNOWN_UPWARD: dict[tuple[str, str], str] = {
    # (importer, imported): why it is still there and how it goes away.
}

MAX_LINES = 500
MAX_PARAMS = 8  # public functions and methods; self/cls/*args/**kwargs not counted


def module_name(path: Path) -> str:
    """`hf_slug/audit/report.py` -> `hf_slug.audit.report`; a package's `__init__` is the package."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(source: str, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The hf_slug modules `source` imports anywhere (lazy and TYPE_CHECKING imports too)."""
    here = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            subs = {f"{target}.{a.name}" for a in node.names} & known
            found.update(subs or {target})
    out = set()
    for name in found:
        if name != "hf_slug" and not name.startswith("hf_slug."):
            continue
        while name not in known and "." in name:  # `import hf_slug.x.attr`-like spellings
            name = name.rpartition(".")[0]
        out.add(name)
        parent = name.rpartition(".")[0]
        while parent not in ("", "hf_slug"):  # importing a.b.c runs package a.b
            out.add(parent)
            parent = parent.rpartition(".")[0]
    out.discard(module)
    return out


def imports_of(module: str) -> set[str]:
    path = MODULES[module]
    return imported(
        path.read_text(encoding="utf-8"), module, path.name == "__init__.py", set(LAYER)
    )


@pytest.mark.parametrize(
    ("source", "module", "is_package", "expected"),
    [
        ("from .io import x", "hf_slug.delta", False, {"hf_slug.io"}),
        ("def f():\n    from .hub import y", "hf_slug.delta", False, {"hf_slug.hub"}),
        (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .unlearn import R",
            "hf_slug.delta",
            False,
            {"hf_slug.unlearn"},
        ),
        ("from ..errors import E", "hf_slug.audit.report", False, {"hf_slug.errors"}),
        ("from . import report", "hf_slug.audit", True, {"hf_slug.audit.report"}),
        ("from . import audit", "hf_slug.audit.command", False, {"hf_slug.audit"}),
        ("from .audit.report import A", "hf_slug.hub", False, {"hf_slug.audit.report", "hf_slug.audit"}),
        ("from hf_slug import ConceptDelta", "hf_slug.cli", False, {"hf_slug"}),
        ("import hf_slug.demo.run", "hf_slug.x", False, {"hf_slug.demo.run", "hf_slug.demo"}),
        ("import torch\nfrom transformers import CLIPModel", "hf_slug.delta", False, set()),
    ],
    ids=[
        "relative", "lazy", "type-checking", "parent-relative", "package-submodule",
        "package-attribute", "runs-parent-package", "facade", "absolute", "third-party",
    ],
)  # fmt: skip
def test_import_reader(source: str, module: str, is_package: bool, expected: set[str]) -> None:
    known = set(LAYER) | {"hf_slug.x", "hf_slug.audit.report"}  # two made-up modules
    assert imported(source, module, is_package, known) == expected


def test_every_module_has_a_layer() -> None:
    missing = sorted(set(MODULES) - set(LAYER))
    stale = sorted(set(LAYER) - set(MODULES))
    assert not missing, f"give {missing} a layer here and in docs/architecture.md"
    assert not stale, f"{stale} no longer exist: remove them from LAYER and the doc"


@pytest.mark.parametrize("module", sorted(MODULES), ids=sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    rank = LAYERS.index(LAYER[module])
    upward = {
        f"{other} ({LAYER[other]})"
        for other in imports_of(module)
        if LAYERS.index(LAYER[other]) > rank and (module, other) not in KNOWN_UPWARD
    }
    assert not upward, f"{module} ({LAYER[module]}) imports a higher layer: {sorted(upward)}"


def test_known_upward_imports_are_still_there() -> None:
    """An allow-listed import that is gone must leave the list too (the list is empty today)."""
    fixed = [pair for pair in KNOWN_UPWARD if pair[1] not in imports_of(pair[0])]
    assert not fixed, f"{fixed} are fixed: remove them from KNOWN_UPWARD"


LIBRARY = sorted({m for m in MODULES if LAYER.get(m) != "apps"} | {"hf_slug.testing"})
"""Modules that must work without the demo: every layer below apps, and the tiny test models."""


@pytest.mark.parametrize("module", LIBRARY, ids=LIBRARY)
def test_library_never_touches_the_demo(module: str) -> None:
    """No library module imports hf_slug.demo or names a file of the embedded model's folder."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    paths = [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant)
        and isinstance(n.value, str)
        and id(n) not in docstrings
        and "embedded_" in n.value
    ]
    demo = {m for m in imports_of(module) if m == "hf_slug.demo" or m.startswith("hf_slug.demo.")}
    assert not demo, f"{module} imports {sorted(demo)}: the library must not depend on the demo"
    assert not paths, f"{module} reads demo files {paths}: ship what it needs as package data"


@pytest.mark.parametrize(
    "module",
    ["hf_slug.testing", "hf_slug.delta", "hf_slug.config"],
    ids=["testing-tokenizer", "delta-knows-no-result", "config-version"],
)
def test_fixed_violations_stay_fixed(module: str) -> None:
    """The upward or demo-bound imports issue 13 found in these modules are gone."""
    banned = {
        "hf_slug.testing": {"hf_slug.demo"},
        "hf_slug.delta": {"hf_slug.hub", "hf_slug.unlearn"},
        "hf_slug.config": {"hf_slug"},
    }[module]
    assert not imports_of(module) & banned


# -- package data ---------------------------------------------------------------------------------
def package_data() -> list[str]:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-data"]["hf_slug"]


def test_package_data_patterns_name_existing_files() -> None:
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("installed without its source tree")
    empty = [p for p in package_data() if not any(f.is_file() for f in PACKAGE.glob(p))]
    assert not empty, f"package-data patterns {empty} match no file: remove them from pyproject"


@pytest.mark.parametrize(
    "relative",
    [
        "templates/delta_card_template.md",
        "assets/clip_tokenizer/vocab.json",
        "assets/clip_tokenizer/merges.txt",
        "demo/embedded_clip/model.safetensors",
    ],
    ids=["card-template", "tokenizer-vocab", "tokenizer-merges", "embedded-model"],
)
def test_data_files_are_regular_package_data(relative: str) -> None:
    """Each is a plain file inside the package (no symlink out of it) that package-data ships."""
    path = PACKAGE / relative
    assert path.is_file() and not path.is_symlink(), f"{relative} must be a regular file"
    assert path.resolve().is_relative_to(PACKAGE)
    if (ROOT / "pyproject.toml").is_file():
        shipped = {f for p in package_data() for f in PACKAGE.glob(p)}
        assert path in shipped, f"add a pattern for {relative} to package-data in pyproject.toml"


def test_no_symlinks_in_the_package() -> None:
    links = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*") if p.is_symlink()]
    assert not links, f"{links} are symbolic links: copy the files into the package instead"


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt"], ids=["vocab", "merges"])
def test_tokenizer_copies_match(name: str) -> None:
    """The tests' tokenizer (package data) and the embedded model's are the same files."""
    from hf_slug.testing import TOKENIZER_DIR

    assert TOKENIZER_DIR == PACKAGE / "assets" / "clip_tokenizer"
    shipped = (TOKENIZER_DIR / name).read_bytes()
    assert shipped == (PACKAGE / "demo" / "embedded_clip" / name).read_bytes()


# -- sizes ------------------------------------------------------------------------------------------
def lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


FILES = sorted(str(p.relative_to(ROOT).as_posix()) for p in MODULES.values())


@pytest.mark.parametrize("relative", FILES, ids=FILES)
def test_module_size(relative: str) -> None:
    count = lines(ROOT / relative)
    assert count <= MAX_LINES, f"{relative} has {count} lines (> {MAX_LINES}): split it"


def public_functions() -> dict[str, int]:
    """Qualified name -> parameter count (not self/cls/*args/**kwargs) of public functions."""
    counts: dict[str, int] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name.startswith("_") and node.name != "__init__":
                    continue
                a = node.args
                names = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
                counts[prefix + node.name] = len([n for n in names if n not in ("self", "cls")])
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                visit(node.body, f"{prefix}{node.name}.")

    for module, path in MODULES.items():
        visit(ast.parse(path.read_text(encoding="utf-8")).body, module + ".")
    return counts


PUBLIC = public_functions()


def test_no_public_function_takes_more_than_max_params() -> None:
    assert len(PUBLIC) > 100, "the signature reader found almost no public function"
    assert PUBLIC["hf_slug.unlearn.unlearn"] == 8  # the reader counts what it should
    over = {name: count for name, count in PUBLIC.items() if count > MAX_PARAMS}
    assert not over, f"group these parameters into a typed object (hf_slug.options): {over}"


# -- a result makes its delta -----------------------------------------------------------------------
class _Result:
    """Stands in for an UnlearningResult: records what to_delta was asked."""

    def to_delta(self, **kwargs: object) -> tuple[str, dict[str, object]]:
        return ("delta", kwargs)


DEFAULTS = {"concept_kind": None, "model_family": "clip", "component": None, "rename": None}


@pytest.mark.parametrize(
    ("result", "kwargs", "expected"),
    [
        (_Result(), {}, ("delta", DEFAULTS)),
        (
            _Result(),
            {"concept_kind": "identity", "rename": {"a": "b"}},
            ("delta", {**DEFAULTS, "concept_kind": "identity", "rename": {"a": "b"}}),
        ),
        (object(), {}, AdapterError),
        ({"converged": True}, {}, AdapterError),
    ],
    ids=["delegates", "passes-keywords", "not-a-result", "dict-is-not-a-result"],
)
def test_from_result_asks_the_result(result: object, kwargs: dict, expected: object) -> None:
    from hf_slug.delta import ConceptDelta

    if expected is AdapterError:
        with pytest.raises(AdapterError, match="UnlearningResult"):
            ConceptDelta.from_result(result, **kwargs)
    else:
        assert ConceptDelta.from_result(result, **kwargs) == expected


@pytest.mark.parametrize(
    "name",
    ["resolve_folder", "resolve_delta_folder", "not_a_delta_error", "PEFT_CONFIG"],
    ids=["resolve_folder", "resolve_delta_folder", "not_a_delta_error", "PEFT_CONFIG"],
)
def test_hub_keeps_the_resolve_names(name: str) -> None:
    """The resolvers moved to the core module hf_slug.resolve; hf_slug.hub still has them."""
    import hf_slug.hub
    import hf_slug.resolve

    assert getattr(hf_slug.hub, name) is getattr(hf_slug.resolve, name)
