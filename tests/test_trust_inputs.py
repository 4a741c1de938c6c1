"""Issue 12, bad data and bad calls: each case gets a typed hf_slug error that names the problem
(the file, the line, the index, the argument) and the fix — before any gradient is computed
whenever the check is cheap. One row per case; every row failed on the code before the fix."""

from __future__ import annotations

import io
import json
import math
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import random_images, tiny_clip

from hf_slug import (
    GradientOptions,
    SearchSettings,
    SLUGConfig,
    UnlearnOptions,
    unlearn,
)
from hf_slug.data import load_pairs
from hf_slug.errors import (
    ConfigError,
    DataFormatError,
    NonFiniteGradientError,
    SLUGError,
    UnknownLayerError,
    UnsupportedModelError,
)
from hf_slug.evaluation import Evaluator
from hf_slug.gradients import compute_gradients
from hf_slug.search import Criterion, search_layers

NAMES = ["Ada Byron", "Bob Stone", "Cy Young"]
LAYER = "text_model.encoder.layers.0.mlp.fc1.weight"


# -- data: folders, metadata files and in-memory lists ---------------------------------------
def _folder(root: Path, n: int = 2) -> Path:
    folder = root / "data"
    folder.mkdir()
    for i, image in enumerate(random_images(n, seed=5)):
        image.save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"caption {i}")
    return folder


def _truncated_jpeg(root: Path) -> Path:
    folder = _folder(root)
    buffer = io.BytesIO()
    random_images(1, seed=9)[0].resize((64, 64)).save(buffer, format="JPEG", quality=95)
    (folder / "broken.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    (folder / "broken.txt").write_text("a broken photo")
    return folder


def _not_an_image(root: Path) -> Path:
    folder = _folder(root)
    (folder / "fake.png").write_bytes(b"this is no PNG at all")
    (folder / "fake.txt").write_text("a fake photo")
    return folder


def _metadata(text: str | bytes, name: str = "metadata.jsonl") -> Callable[[Path], Path]:
    def build(root: Path) -> Path:
        folder = _folder(root)
        for txt in folder.glob("*.txt"):
            txt.unlink()
        (root / "outside.png").write_bytes((folder / "img0.png").read_bytes())
        data = text.encode() if isinstance(text, str) else text
        (folder / name).write_bytes(data)
        return folder

    return build


def _line(row: Any) -> str:
    return json.dumps(row) + "\n"


def _non_utf8_caption(root: Path) -> Path:
    folder = _folder(root)
    (folder / "img1.txt").write_bytes("café".encode("latin-1"))
    return folder


def _decode_all(source: Any) -> None:
    pairs = load_pairs(source, name="forget set")
    for i in range(len(pairs)):
        pairs.image(i)


GOOD = _line({"file_name": "img0.png", "text": "c0"})
DEEP = '{"file_name": "img0.png", "text": ' + "[" * 100_000 + "]" * 100_000 + "}\n"


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        pytest.param(_truncated_jpeg, DataFormatError, r"broken\.jpg.*truncated", id="truncated"),
        pytest.param(_not_an_image, DataFormatError, r"fake\.png", id="not-an-image"),
        pytest.param(
            _metadata(GOOD + '{"file_name": "img1.png", "text": \n'),
            DataFormatError,
            r"metadata\.jsonl, line 2, is not valid JSON",
            id="jsonl-bad-line",
        ),
        pytest.param(
            _metadata(GOOD + DEEP),
            DataFormatError,
            r"line 2",
            id="jsonl-deeply-nested",
        ),
        pytest.param(
            _metadata(GOOD + _line(["img1.png", "c1"])),
            DataFormatError,
            r"line 2, holds a list",
            id="jsonl-row-not-an-object",
        ),
        pytest.param(
            _metadata(_line({"text": "c0"})),
            DataFormatError,
            r"line 1, has no 'file_name'",
            id="jsonl-no-file-name",
        ),
        pytest.param(
            _metadata("file_name,label\nimg0.png,c0\n", "metadata.csv"),
            DataFormatError,
            r"needs a 'file_name' column and a caption column",
            id="csv-no-caption-column",
        ),
        pytest.param(
            _metadata(GOOD + _line({"file_name": "../outside.png", "text": "c1"})),
            DataFormatError,
            r"outside",
            id="jsonl-file-name-escapes-the-folder",
        ),
        pytest.param(
            _metadata(GOOD + _line({"file_name": "gone.png", "text": "c1"})),
            DataFormatError,
            r"line 2, lists gone\.png",
            id="jsonl-lists-a-missing-file",
        ),
        pytest.param(
            _metadata('{"file_name": "img0.png", "text": "caf\xe9"}\n'.encode("latin-1")),
            DataFormatError,
            r"metadata\.jsonl is not UTF-8",
            id="jsonl-not-utf8",
        ),
        pytest.param(
            _non_utf8_caption, DataFormatError, r"img1\.txt is not UTF-8", id="txt-not-utf8"
        ),
    ],
)
def test_bad_files_get_a_typed_error_naming_the_file(tmp_path, build, error, match):
    folder = build(tmp_path)
    with pytest.raises(error, match=match):
        _decode_all(folder)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        pytest.param(lambda im: (im[:1] + [None], ["a", "b"]), r"image 1 is a NoneType", id="None"),
        pytest.param(lambda im: [(42, "a")], r"image 0 is a int", id="int-in-pairs"),
        pytest.param(
            lambda im: (im[:1] + [torch.zeros(3, 8, 8)], ["a", "b"]),
            r"image 1 is a Tensor.*Image\.fromarray",
            id="tensor",
        ),
        pytest.param(
            lambda im: ([im[0], "/no/such/image.png"], ["a", "b"]),
            r"image 1 of the forget set \(/no/such/image\.png\) is not a file",
            id="missing-path",
        ),
    ],
)
def test_non_images_in_lists_are_named_by_index(make, match):
    with pytest.raises(DataFormatError, match=match):
        load_pairs(make(random_images(2)), name="forget set")


# -- calls: unlearn, compute_gradients, the search -------------------------------------------
@pytest.fixture
def no_gradients(monkeypatch):
    """Fail the test if `unlearn` gets as far as computing gradients."""

    def refuse(*args, **kwargs):
        raise AssertionError("gradients were computed before the bad input was reported")

    monkeypatch.setattr(sys.modules["hf_slug.gradients"], "compute_gradients", refuse)


def _pairs(n: int, seed: int, caption: str) -> tuple[list, list]:
    return random_images(n, seed), [f"{caption} {i}" for i in range(n)]


def _forget_metric_missing(model):
    return {"accuracy": 0.5}


def _forget_metric_nan(model):
    return {"forget_acc": math.nan}


def _returns_none(model):
    return None


def _config(**changes: Any) -> SLUGConfig:
    return SLUGConfig(
        **{"concept": "Ada Byron", "towers": ("text",), "candidate_labels": NAMES, **changes}
    )


UNLEARN_CASES = [
    pytest.param(
        {"model": "openai/clip-vit-base-patch32"},
        UnsupportedModelError,
        r"CLIPModel\.from_pretrained\('openai/clip-vit-base-patch32'\)",
        id="model-id-string",
    ),
    pytest.param({"model": object()}, UnsupportedModelError, r"not a torch module", id="object"),
    pytest.param(
        {"config": {"concept": "Ada Byron"}}, ConfigError, r"SLUGConfig", id="config-dict"
    ),
    pytest.param({"processor": None}, ConfigError, r"CLIPProcessor", id="no-processor"),
    pytest.param(
        {"config": lambda: _config(candidate_labels=None)},
        ConfigError,
        r"candidate_labels",
        id="no-labels",
    ),
    pytest.param(
        {"config": lambda: _config(candidate_labels=["Ada Byron"])},
        ConfigError,
        r"at least one other name",
        id="only-the-concept-as-label",
    ),
    pytest.param(
        {"evaluator": _forget_metric_missing},
        ConfigError,
        r"returned no 'forget_acc' metric.*\['accuracy'\]",
        id="evaluator-without-forget-metric",
    ),
    pytest.param(
        {"evaluator": _forget_metric_nan},
        NonFiniteGradientError,
        r"'forget_acc' = nan",
        id="evaluator-returns-nan",
    ),
    pytest.param(
        {"evaluator": _returns_none}, ConfigError, r"returned a NoneType", id="evaluator-None"
    ),
    pytest.param({"evaluator": 3}, ConfigError, r"evaluator must be", id="evaluator-not-callable"),
    pytest.param(
        {"options": lambda p: UnlearnOptions(gradients=GradientOptions(autocast_dtype="bf16"))},
        ConfigError,
        r"torch\.bfloat16",
        id="autocast-dtype-str",
    ),
    pytest.param(
        {"options": lambda p: UnlearnOptions(cache_dir=p["file"])},
        ConfigError,
        r"is a file",
        id="cache-dir-is-a-file",
    ),
    pytest.param(
        {"options": lambda p: UnlearnOptions(forget_gradients=str(p["missing"]))},
        ConfigError,
        r"forget_gradients=.*is not a file",
        id="gradient-file-missing",
    ),
    pytest.param(
        {"options": lambda p: {"progress": False}},
        ConfigError,
        r"UnlearnOptions",
        id="options-dict",
    ),
    pytest.param(
        {"cache_dir": "cache"},
        ConfigError,
        r"no longer takes cache_dir=: pass options=UnlearnOptions\(cache_dir=\.\.\.\)",
        id="legacy-keyword-names-its-new-place",
    ),
    pytest.param(
        {"gradient_checkpointing": True},
        ConfigError,
        r"GradientOptions\(checkpointing=",
        id="legacy-gradient-keyword",
    ),
]


@pytest.mark.parametrize(("changes", "error", "match"), UNLEARN_CASES)
def test_bad_unlearn_calls_fail_typed_before_any_gradient(
    tmp_path, processor, no_gradients, changes, error, match
):
    (tmp_path / "file").write_text("not a folder")
    paths = {"file": tmp_path / "file", "missing": tmp_path / "missing.safetensors"}
    call: dict[str, Any] = {
        "model": tiny_clip(),
        "processor": processor,
        "forget": _pairs(3, 1, "a photo of Ada Byron"),
        "retain": _pairs(4, 2, "a photo of thing"),
        "config": _config,
        **changes,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error, match=match) as caught:
            if call["config"] is _config or getattr(call["config"], "__name__", "") == "<lambda>":
                call["config"] = call["config"]()  # built inside: its own check may fire first
            call = {k: v.format(**paths) if isinstance(v, str) else v for k, v in call.items()}
            args = [call.pop(k) for k in ("model", "processor", "forget", "retain", "config")]
            options = call.pop("options", lambda p: UnlearnOptions(progress=False))
            unlearn(*args, options=options(paths), **call)
    assert isinstance(caught.value, SLUGError)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        pytest.param({"batch_size": 0}, ConfigError, r"batch_size must be a positive int, got 0"),
        pytest.param({"batch_size": 2.5}, ConfigError, r"batch_size must be a positive int"),
        pytest.param({"names": []}, UnknownLayerError, r"non-empty list of parameter names"),
        pytest.param({"names": ["no.such.weight"]}, UnknownLayerError, r"no\.such\.weight"),
        pytest.param({"model": "openai/clip"}, UnsupportedModelError, r"from_pretrained"),
        pytest.param({"pairs": ([], [])}, SLUGError, r"empty"),
    ],
    ids=["batch-size-0", "batch-size-float", "no-names", "unknown-name", "model-id", "no-pairs"],
)
def test_bad_gradient_calls_get_typed_errors(processor, kwargs, error, match):
    call: dict[str, Any] = {
        "model": tiny_clip(),
        "processor": processor,
        "pairs": load_pairs(_pairs(2, 1, "a photo")),
        "loss": "forget",
        "names": [LAYER],
        "progress": False,
        **kwargs,
    }
    with pytest.raises(error, match=match):
        compute_gradients(**call)


class _Evaluator(Evaluator):
    calls = 0

    def __call__(self, model):
        _Evaluator.calls += 1
        return {"forget_acc": 1.0}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"initial_step": math.nan}, r"initial_step must be a finite number"),
        pytest.param({"initial_step": -0.1}, r"initial_step must be a finite number > 0"),
        pytest.param({"initial_step": math.inf}, r"initial_step"),
        pytest.param({"max_evaluations": 0}, r"max_evaluations must be a positive int"),
        pytest.param({"max_evaluations": 2.5}, r"max_evaluations"),
    ],
    ids=["step-nan", "step-negative", "step-inf", "no-evaluations", "evaluations-float"],
)
def test_bad_search_options_stop_before_the_first_trial(kwargs, match):
    model = tiny_clip()
    grads = {LAYER: torch.ones_like(dict(model.named_parameters())[LAYER])}
    _Evaluator.calls = 0
    settings = {"initial_step": 0.1, "max_evaluations": 3, **kwargs}
    with pytest.raises(ConfigError, match=match):
        search_layers(
            model,
            [(LAYER,)],
            grads,
            _Evaluator(),
            Criterion(),
            {"forget_acc": 1.0},
            SearchSettings(**settings),
            progress=False,
        )
    assert _Evaluator.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"forget_target": math.nan}, r"forget_target must be a finite number"),
        pytest.param({"utility_tolerance": -1.0}, r"utility_tolerance must be None or"),
        pytest.param({"forget_metric": ""}, r"forget_metric must be a metric name"),
    ],
    ids=["target-nan", "tolerance-negative", "metric-empty"],
)
def test_bad_criteria_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Criterion(**kwargs)


# -- the benchmarks' task cache: data only, per user, atomic ----------------------------------
ROOT = Path(__file__).resolve().parents[1]
CODE_LOADERS = {"pickle", "cPickle", "dill", "marshal", "shelve", "joblib"}


def _imports(path: Path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.split(".")[0])
    return found


def _no_code_loading_imports() -> None:
    files = [p for d in ("hf_slug", "benchmarks", "scripts") for p in (ROOT / d).rglob("*.py")]
    offenders = {str(p.relative_to(ROOT)): _imports(p) & CODE_LOADERS for p in files}
    assert not {p: m for p, m in offenders.items() if m}


def _tasks_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import tasks
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return tasks


def _cache_is_per_user() -> None:
    tasks = _tasks_module()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_SLUG_CACHE", "/somewhere/mine")
        assert tasks.default_cache_dir() == Path("/somewhere/mine/benchmarks")
        patch.delenv("HF_SLUG_CACHE")
        patch.setenv("XDG_CACHE_HOME", "/home/me/.cache")
        assert tasks.default_cache_dir() == Path("/home/me/.cache/hf_slug/benchmarks")


def _cache_round_trip(tmp_path: Path) -> None:
    from hf_slug.evaluation import ZeroShotTask

    tasks = _tasks_module()
    images = random_images(3, seed=4)
    zero_shot = ZeroShotTask(
        "forget", images[:2], ["A", "B"], ["A", "B"], prompts={"A": ["a"], "B": ["b"]}
    )
    task = tasks.Task(
        tasks.TaskSpec("Ada"), [(images[0], "c0")], [(images[2], "c2")], [zero_shot], []
    )
    path = tasks.save_task(task, tmp_path / "task.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["task.safetensors"]  # no temp file left
    back = tasks.load_task(path)
    assert back.spec == task.spec and back.forget[0][1] == "c0"
    assert back.val_tasks[0].prompts == {"A": ["a"], "B": ["b"]}
    assert back.val_tasks[0].images[1].tobytes() == images[1].tobytes()
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(1)}, str(tmp_path / "other.safetensors"))  # not a task cache
    with pytest.raises(ValueError, match=r"other\.safetensors is not a .* task cache"):
        tasks.load_task(tmp_path / "other.safetensors")


@pytest.mark.parametrize(
    "check",
    [
        pytest.param(lambda tmp: _no_code_loading_imports(), id="no-code-loading-imports"),
        pytest.param(lambda tmp: _cache_is_per_user(), id="per-user-cache-folder"),
        pytest.param(_cache_round_trip, id="data-only-atomic-round-trip"),
    ],
)
def test_benchmark_task_cache_holds_data_only(tmp_path, check):
    check(tmp_path)
