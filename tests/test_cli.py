"""The hf-slug command line, driven in subprocesses: outputs, files and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import random_images, tiny_clip, tiny_processor

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def hf_slug(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hf_slug", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    tiny_clip().save_pretrained(root / "model")
    tiny_processor().save_pretrained(root / "model")
    for name, captions, seed in (
        ("forget", ["a photo of Ada Byron"] * 6, 1),
        ("retain", [f"a photo of thing {i}" for i in range(8)], 2),
        ("labelled", ["Ada Byron"] * 3 + ["Bob Stone"] * 3, 3),
        ("val_forget", ["Ada Byron"] * 4, 4),
        ("val_retain", [f"a photo of thing {i}" for i in range(8, 16)], 5),
    ):
        folder = root / name
        folder.mkdir()
        for i, (image, caption) in enumerate(zip(random_images(len(captions), seed), captions)):
            image.save(folder / f"{i}.png")
            (folder / f"{i}.txt").write_text(caption)
    (root / "names.txt").write_text("Ada Byron\nBob Stone\nCy Young\n")
    return root


def test_help_is_there_for_a_newcomer():
    result = hf_slug("--help")
    assert result.returncode == 0
    for command in ("demo", "unlearn", "eval", "apply", "merge", "export-lora", "push", "inspect"):
        assert command in result.stdout
    assert shutil.which("hf-slug") or (Path(sys.executable).parent / "hf-slug").exists()


def test_unlearn_inspect_export_merge_eval(workspace):
    out = workspace / "delta"
    result = hf_slug(
        "unlearn",
        "--model",
        str(workspace / "model"),
        "--concept",
        "Ada Byron",
        "--forget",
        str(workspace / "forget"),
        "--retain",
        str(workspace / "retain"),
        "--labels-file",
        str(workspace / "names.txt"),
        "--val-forget",
        str(workspace / "val_forget"),
        "--val-retain",
        str(workspace / "val_retain"),
        "--forget-target",  # a random model: plumbing, so the first trial may pass
        "1",
        "--tower",
        "text",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    assert "layer:" in result.stdout
    assert "measured on validation: 4 forget + 8 retain pairs given as validation" in result.stdout
    assert {p.name for p in out.iterdir()} >= {
        "slug_config.json",
        "slug_model.safetensors",
        "pareto.png",
        "report.json",
    }
    report = json.loads((out / "report.json").read_text())
    assert report["converged"] and report["trials"]
    assert report["data"]["source"] == "validation"
    assert report["data"]["gradient_forget"] == 6  # the given forget set, whole

    result = hf_slug("inspect", str(out), "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["concept"] == "Ada Byron" and len(info["targets"]) == 1

    result = hf_slug("export-lora", str(out), "--out", str(workspace / "lora"), "--rank", "4")
    assert result.returncode == 0, result.stderr
    assert (workspace / "lora" / "adapter_config.json").exists() and "ranks [4]" in result.stdout

    result = hf_slug(
        "merge",
        "--model",
        str(workspace / "model"),
        "--delta",
        str(out),
        "--out",
        str(workspace / "merged"),
    )
    assert result.returncode == 0, result.stderr
    from transformers import CLIPModel

    merged = dict(CLIPModel.from_pretrained(workspace / "merged").named_parameters())
    base = dict(CLIPModel.from_pretrained(workspace / "model").named_parameters())
    changed = [n for n in base if not (merged[n] == base[n]).all()]
    assert changed == list(info["targets"])
    # merging again into that folder replaces the model files as a whole (a stale shard of an
    # earlier save goes) and keeps the user's own files
    (workspace / "merged" / "README.md").write_text("my notes")
    (workspace / "merged" / "model-00002-of-00002.safetensors").write_bytes(b"stale")
    again = hf_slug(
        "merge", "--model", str(workspace / "model"), "--delta", str(out),
        "--out", str(workspace / "merged"),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (workspace / "merged" / "README.md").read_text() == "my notes"
    assert not (workspace / "merged" / "model-00002-of-00002.safetensors").exists()

    result = hf_slug(
        "eval",
        "--model",
        str(workspace / "model"),
        "--delta",
        str(out),
        "--data",
        str(workspace / "labelled"),
        "--labels-file",
        str(workspace / "names.txt"),
    )
    assert result.returncode == 0, result.stderr
    assert "base" in result.stdout and "with deltas" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["unlearn", "--concept", "x"], 2, "required"),  # argparse usage error
        (["inspect", "/no/such/folder"], 2, "neither an existing folder nor a Hub repo id"),
        (["export-lora", "{empty}", "--out", "{empty}/x"], 1, "holds no hf_slug delta"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_gives_trustworthy_exit_codes(args, code, message, tmp_path):
    result = hf_slug(*[a.replace("{empty}", str(tmp_path)) for a in args])
    assert result.returncode == code
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_folder_is_a_usage_error(workspace):
    result = hf_slug(
        "unlearn",
        "--model",
        str(workspace / "model"),
        "--concept",
        "Ada Byron",
        "--forget",
        str(workspace / "nope"),
        "--retain",
        str(workspace / "retain"),
        "--out",
        str(workspace / "x"),
    )
    assert (
        result.returncode == 2 and "--forget" in result.stderr and "no such folder" in result.stderr
    )


def test_validation_folders_go_together_and_small_sets_say_what_to_do(workspace, tmp_path):
    common = [
        "unlearn",
        "--model",
        str(workspace / "model"),
        "--concept",
        "Ada Byron",
        "--forget",
        str(workspace / "forget"),
        "--retain",
        str(workspace / "retain"),
        "--labels",
        "Ada Byron,Bob Stone",
        "--quiet",
    ]
    alone = hf_slug(
        *common, "--val-forget", str(workspace / "val_forget"), "--out", str(tmp_path / "a")
    )
    assert alone.returncode == 2 and "--val-forget and --val-retain go together" in alone.stderr
    small = hf_slug(*common, "--out", str(tmp_path / "b"))  # 6 forget images: too few to split
    assert small.returncode == 1
    assert "validation_share=0.25 holds out 2 of the 6 pairs" in small.stderr
    assert not (tmp_path / "b" / "slug_config.json").exists()


def test_demo_vlm_refuses_an_unknown_person_before_loading_anything(tmp_path):
    result = hf_slug("demo", "--vlm", "--targets", "Nobody Here", "Ada", "--out", str(tmp_path))
    assert result.returncode == 2 and "'Nobody Here' is not an identity" in result.stderr
