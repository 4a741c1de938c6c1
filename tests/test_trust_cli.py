"""Issue 12, the command line: exit codes as the README promises (0 success, 1 the work failed,
2 a usage error), flags named in messages, one line on stderr and never a traceback, and the
cheap checks (labels, paths, output folder, option values) before any model is loaded.

`hf_slug.cli.main` runs in-process. One row per case; every row failed on the code before the fix.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import random_images, tiny_clip, tiny_processor
from safetensors.torch import load_file, save_file

from hf_slug import (
    ConceptDelta,
    SLUGConfig,
    UnlearnOptions,
    unlearn,
)
from hf_slug.cli import main

ADA = "Ada Byron"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A tiny model, forget / retain / labelled folders, a good delta and one holding NaN."""
    root = tmp_path_factory.mktemp("trust-cli")
    model, processor = tiny_clip(), tiny_processor()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    for name, captions, seed in (
        ("forget", [f"a photo of {ADA}"] * 4, 1),
        ("retain", [f"a photo of thing {i}" for i in range(4)], 2),
        ("labelled", [ADA] * 2 + ["Bob Stone"] * 2, 3),
    ):
        folder = root / name
        folder.mkdir()
        for i, (image, caption) in enumerate(zip(random_images(len(captions), seed), captions)):
            image.save(folder / f"{i}.png")
            (folder / f"{i}.txt").write_text(caption)
    broken = root / "broken"
    shutil.copytree(root / "forget", broken)
    (broken / "9.png").write_bytes(b"no image here")
    (broken / "9.txt").write_text(f"a photo of {ADA}")
    malformed = root / "malformed"
    shutil.copytree(root / "forget", malformed)
    (malformed / "metadata.jsonl").write_text('{"file_name": "0.png", "text": "x"}\n{oops\n')
    (root / "names.txt").write_text(f"{ADA}\nBob Stone\nCy Young\n")
    (root / "a_file").write_text("not a folder")
    (root / "full").mkdir()
    (root / "full" / "precious.txt").write_text("someone's work")

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the stub evaluator "forgets" before any edit
        result = unlearn(
            model,
            processor,
            root / "forget",
            root / "retain",
            SLUGConfig(concept=ADA, towers=("text",), layer="text.L0.fc1"),
            evaluator=lambda m: {"forget_acc": 0.0},
            options=UnlearnOptions(progress=False),
        )
    ConceptDelta.from_result(result, concept_kind="identity").save_pretrained(root / "delta")
    shutil.copytree(root / "delta", root / "nan_delta")
    weights = root / "nan_delta" / "slug_model.safetensors"
    tensors = {k: torch.full_like(v, float("nan")) for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt", "hf_slug": "delta"})
    return root


def run(argv: list[str], ws: Path, capsys) -> tuple[int, str]:
    """`main(argv)` with {placeholders} filled; return (exit code, stderr)."""
    argv = [a.format(ws=ws) for a in argv]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own exit (the code before the fix did not catch it)
        code = stop.code
    return code, capsys.readouterr().err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


MODEL = ["--model", "{ws}/model"]
UNLEARN = ["unlearn", *MODEL, "--concept", ADA, "--forget", "{ws}/forget", "--retain"]
UNLEARN += ["{ws}/retain", "--out", "{ws}/out", "--quiet"]
NAMES = ["--labels-file", "{ws}/names.txt"]
EXPORT = ["export-lora", "{ws}/delta", "--out", "{ws}/lora"]


def _set(argv: list[str], flag: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(flag) + 1] = value
    return argv


# Usage errors found before any model is loaded: exit 2, the flag named.
USAGE = [
    pytest.param(
        ["inspect", "/no/such/folder"], "neither an existing folder", id="inspect-missing"
    ),
    pytest.param([*EXPORT, "--rank", "abc"], "argument --rank", id="rank-abc"),
    pytest.param([*EXPORT, "--rank", "0"], "argument --rank", id="rank-0"),
    pytest.param([*EXPORT, "--rank", "1.5"], "argument --rank", id="rank-fraction-above-1"),
    pytest.param(_set(EXPORT, "--out", "{ws}/a_file"), "--out", id="export-out-is-a-file"),
    pytest.param(_set(EXPORT, "--out", "{ws}/full"), "--out", id="export-out-holds-other-files"),
    pytest.param(UNLEARN, "--labels", id="unlearn-without-labels"),
    pytest.param([*UNLEARN, "--labels", ADA], "--labels", id="unlearn-only-the-concept"),
    pytest.param([*UNLEARN, "--labels", " , "], "--labels", id="unlearn-empty-labels"),
    pytest.param(
        [*UNLEARN, "--labels-file", "{ws}/no_names.txt"], "--labels-file", id="labels-file-missing"
    ),
    pytest.param(
        _set([*UNLEARN, *NAMES], "--model", "{ws}/no_model"), "--model", id="unlearn-model-missing"
    ),
    pytest.param(
        _set([*UNLEARN, *NAMES], "--model", "{ws}/a_file"), "--model", id="unlearn-model-is-a-file"
    ),
    pytest.param(
        _set([*UNLEARN, *NAMES], "--out", "{ws}/a_file"), "--out", id="unlearn-out-is-a-file"
    ),
    pytest.param(
        _set([*UNLEARN, *NAMES], "--out", "{ws}/forget"), "--out", id="unlearn-out-is-an-input"
    ),
    pytest.param([*UNLEARN, *NAMES, "--batch-size", "0"], "--batch-size", id="batch-size-0"),
    pytest.param(
        [*UNLEARN, *NAMES, "--max-evaluations", "-1"], "--max-evaluations", id="max-evaluations"
    ),
    pytest.param(
        [*UNLEARN, *NAMES, "--forget-target", "nan"], "--forget-target", id="forget-target-nan"
    ),
    pytest.param(
        [*UNLEARN, *NAMES, "--utility-tolerance", "-1"],
        "--utility-tolerance",
        id="utility-tolerance-negative",
    ),
    pytest.param(
        ["merge", *MODEL, "--delta", "{ws}/delta", "--weight", "nan", "--out", "{ws}/m"],
        "--weight",
        id="merge-weight-nan",
    ),
    pytest.param(
        ["merge", *MODEL, "--delta", "{ws}/delta", "--weight", "1", "--weight", "2"]
        + ["--out", "{ws}/m"],
        "--weight",
        id="merge-weight-count",
    ),
    pytest.param(
        ["merge", *MODEL, "--delta", "{ws}/delta", "--out", "{ws}/model"],
        "--out",
        id="merge-out-overwrites-the-model",
    ),
    pytest.param(
        ["apply", *MODEL, "--delta", "{ws}/no_delta", "--out", "{ws}/m"],
        "--delta",
        id="apply-delta-missing",
    ),
    pytest.param(
        ["eval", *MODEL, "--data", "{ws}/labelled", "--labels", "Nobody,Else"],
        "--labels",
        id="eval-labels-miss-the-data",
    ),
    pytest.param(
        ["eval", *MODEL, "--data", "{ws}/labelled", "--template", "a photo"],
        "--template",
        id="eval-template-without-placeholder",
    ),
    pytest.param(
        ["eval", *MODEL, "--data", "{ws}/labelled", "--delta", "/no/such/delta"],
        "--delta",
        id="eval-delta-missing",
    ),
]


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if the command gets as far as loading the model."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the usage error was reported")

    # any path that loads a CLIP model or processor (every command's loader goes through these)
    monkeypatch.setattr("transformers.CLIPModel.from_pretrained", refuse)
    monkeypatch.setattr("transformers.CLIPProcessor.from_pretrained", refuse)


@pytest.mark.parametrize("argv, flag", USAGE)
def test_usage_errors_exit_2_and_name_the_flag_before_loading_the_model(
    ws, capsys, no_model, argv, flag
):
    code, err = run(argv, ws, capsys)
    assert code == 2, err
    assert flag in one_error_line(err)
    assert "candidate_labels=" not in err
    assert (ws / "full" / "precious.txt").read_text() == "someone's work"
    assert (ws / "model" / "config.json").is_file()


# The work itself fails: exit 1, one line naming what is wrong, no traceback.
FAILED = [
    pytest.param(
        ["eval", *MODEL, "--data", "{ws}/labelled", *NAMES, "--delta", "{ws}/nan_delta"],
        "nan",
        id="eval-nan-delta",
    ),
    pytest.param(["export-lora", "{ws}/nan_delta", "--out", "{ws}/lora"], "nan", id="export-nan"),
]


@pytest.mark.parametrize("argv, needle", FAILED)
def test_failed_work_exits_1_with_one_line(ws, capsys, argv, needle):
    code, err = run(argv, ws, capsys)
    assert code == 1, err
    assert needle in one_error_line(err).lower()
    assert not (ws / "lora").exists()


# Bad data is read (cheaply) before the model is loaded: exit 1, the file and line named.
BAD_DATA = [
    pytest.param(
        _set([*UNLEARN, *NAMES], "--forget", "{ws}/broken"), "9.png", id="unlearn-corrupt-image"
    ),
    pytest.param(
        _set([*UNLEARN, *NAMES], "--forget", "{ws}/malformed"),
        "metadata.jsonl, line 2",
        id="unlearn-malformed-metadata",
    ),
    pytest.param(["eval", *MODEL, "--data", "{ws}/broken"], "9.png", id="eval-corrupt-image"),
]


@pytest.mark.parametrize("argv, needle", BAD_DATA)
def test_bad_data_exits_1_before_loading_the_model(ws, capsys, no_model, argv, needle):
    code, err = run(argv, ws, capsys)
    assert code == 1, err
    assert needle in one_error_line(err)


def test_an_unknown_layer_is_a_usage_error_found_before_the_gradients(ws, capsys, monkeypatch):
    import sys

    def refuse(*args, **kwargs):
        raise AssertionError("gradients were computed before the --layer error was reported")

    monkeypatch.setattr(sys.modules["hf_slug.gradients"], "compute_gradients", refuse)
    code, err = run([*UNLEARN, *NAMES, "--tower", "text", "--layer", "text.L9.fc1"], ws, capsys)
    assert code == 2, err
    assert "--layer text.L9.fc1" in one_error_line(err)
