"""Issue 18/19 review, bad input that used to get through: each row failed on the code before
the fix (a silent wrong result, a file that cannot load back, a mixed folder or a raw torch
trace) and now gets a typed hf_slug error before anything is written."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable

import huggingface_hub
import pytest
import torch
from conftest import random_images, tiny_clip, tiny_processor
from safetensors.torch import load_file, save_file
from test_adapters import make_delta
from test_hub import RecordingApi
from trust_fixtures import FC1

import hf_slug.export as export_module
from hf_slug import ConceptDelta, GradientOptions, SLUGModel, export_peft_lora
from hf_slug.audit import AuditBudget, RelearnSettings
from hf_slug.audit_report import AUDIT_NAME, AUDIT_PLOT, AUDIT_TABLE, AuditReport
from hf_slug.cli import main
from hf_slug.errors import (
    AdapterError,
    ConfigError,
    DeltaFormatError,
    NonFiniteGradientError,
)
from hf_slug.hosts.diffusion_export import export_diffusers_lora
from hf_slug.hub import push_to_hub
from hf_slug.unlearn import UnlearningResult


@pytest.fixture(scope="module")
def base():
    return tiny_clip()


@pytest.fixture
def delta(base) -> ConceptDelta:
    return make_delta(base, "Ada Byron", [FC1], 0)


# -- a save accepts only what a load accepts ---------------------------------------------------
@pytest.mark.parametrize(
    "change, match",
    [
        ({"step": float("nan")}, "'step' must be a finite number"),
        ({"step": float("inf")}, "'step' must be a finite number"),
        ({"concept": ""}, "'concept' must be a non-empty string"),
        ({"scales": {FC1: float("nan")}}, "must be a finite number"),
    ],
)
def test_a_config_that_cannot_load_is_not_saved(delta, tmp_path, change, match):
    bad = ConceptDelta(dataclasses.replace(delta.config, **change), delta.tensors)
    with pytest.raises(ConfigError, match=match):
        bad.save_pretrained(tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("dtype", ["float8_e4m3fn", "qint8", "int8", "bool"])
def test_a_loaded_config_names_only_float_dtypes(delta, tmp_path, dtype):
    folder = delta.save_pretrained(tmp_path / "d")
    config = json.loads((folder / "slug_config.json").read_text())
    config["targets"][FC1]["dtype"] = dtype
    (folder / "slug_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="one of \\['float32'"):
        SLUGModel(tiny_clip()).load_adapter(folder)


def test_stored_tensors_in_an_odd_dtype_are_refused(delta, tmp_path):
    folder = delta.save_pretrained(tmp_path / "d")
    tensors = load_file(str(folder / "slug_model.safetensors"))
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in tensors.items()}, str(folder / "x"))
    os.replace(folder / "x", folder / "slug_model.safetensors")
    with pytest.raises(DeltaFormatError, match="not float32, float16, bfloat16 or float64"):
        ConceptDelta.from_pretrained(folder)


# -- options that would silently ruin a run ----------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"storage_dtype": torch.int8},  # truncated every gradient to 0
        {"storage_dtype": torch.bool},
        {"autocast_dtype": torch.int8},  # torch only warned and ran without autocast
        {"autocast_dtype": torch.float64},
    ],
)
def test_gradient_options_take_only_float_dtypes(kwargs):
    with pytest.raises(ConfigError, match="must be one of"):
        GradientOptions(**kwargs)


AUDIT_CASES: list[tuple[Callable[[], object], str]] = [
    (lambda: AuditBudget(relearn_lr=float("nan")), "relearn_lr must be a finite number > 0"),
    (lambda: AuditBudget(pgd_epsilon=float("inf")), "pgd_epsilon must be a finite number"),
    (lambda: AuditBudget(pgd_epsilon=4.0), "pixel bound in \\(0, 1\\]"),
    (lambda: AuditBudget(prompt_steps=-1), "prompt_steps must be a positive int"),
    (lambda: AuditBudget(relearn_sizes=(0,)), "relearn_sizes must be a positive int"),
    (lambda: AuditBudget(relearn_sizes=()), "non-empty tuple"),
    (lambda: AuditBudget(templates=0), "templates must be a positive int"),
    (lambda: RelearnSettings(lr=-1.0), "lr must be a finite number > 0"),
    (lambda: RelearnSettings(max_steps=0), "max_steps must be a positive int"),
]


@pytest.mark.parametrize("make, match", AUDIT_CASES)
def test_an_audit_budget_is_checked_before_any_probe(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_an_audit_budget_takes_a_list_of_sizes():
    assert AuditBudget(relearn_sizes=[1, 4]).relearn_sizes == (1, 4)


# -- exports -----------------------------------------------------------------------------------
EXPORTS = {"peft": export_peft_lora, "diffusers": export_diffusers_lora}


@pytest.mark.parametrize("fmt", sorted(EXPORTS))
@pytest.mark.parametrize(
    "args, error, match",
    [
        ({"delta": {}}, AdapterError, "nothing to export"),
        ({"dtype": torch.int8}, ConfigError, "torch.float32, torch.float16, torch.bfloat16"),
        ({"dtype": None}, ConfigError, "needs a dtype"),
        ({"dtype": "float16"}, ConfigError, "a torch.dtype, not a string"),
    ],
)
def test_an_export_refuses_bad_input_before_writing(delta, tmp_path, fmt, args, error, match):
    source = args.get("delta", delta)
    kwargs = {k: v for k, v in args.items() if k != "delta"}
    if fmt == "diffusers" and source:  # diffusers keys carry the pipeline component
        source = {f"text_encoder.{k}": v for k, v in delta.dense().items()}
    with pytest.raises(error, match=match):
        EXPORTS[fmt](source, tmp_path / "lora", **kwargs)
    assert not (tmp_path / "lora").exists()


def test_a_failed_export_leaves_the_previous_one_whole(delta, tmp_path, monkeypatch):
    export_peft_lora(delta, tmp_path / "lora", rank=2)
    before = {p.name: p.read_bytes() for p in (tmp_path / "lora").iterdir()}

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export_module, "write_json", disk_full)
    with pytest.raises(OSError, match="No space"):
        export_peft_lora(delta, tmp_path / "lora", rank=None)
    assert {p.name: p.read_bytes() for p in (tmp_path / "lora").iterdir()} == before


def test_one_export_format_replaces_the_other(delta, tmp_path):
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "notes.txt").write_text("mine")
    export_peft_lora(delta, tmp_path / "lora", rank=2)
    pipeline_keyed = {f"text_encoder.{k}": v for k, v in delta.dense().items()}
    export_diffusers_lora(pipeline_keyed, tmp_path / "lora")
    names = sorted(p.name for p in (tmp_path / "lora").iterdir())
    assert names == ["notes.txt", "pytorch_lora_weights.safetensors"]


def test_a_non_finite_delta_has_no_low_rank_form(delta):
    broken = ConceptDelta(delta.config, {FC1: torch.full_like(delta.tensors[FC1], float("nan"))})
    with pytest.raises(NonFiniteGradientError, match="NaN/inf"):
        broken.to_lowrank(2)


def test_a_zero_dim_tensor_weight_is_one_shared_weight(base, delta):
    slug = SLUGModel(tiny_clip())
    slug.add_adapter("ada", delta)
    with pytest.raises(NonFiniteGradientError):
        slug.set_adapters(["ada"], torch.tensor(float("nan")))
    slug.set_adapters(["ada"], torch.tensor(0.5))
    assert slug.weights["ada"] == 0.5


# -- pushing and the files beside a delta ------------------------------------------------------
def test_a_push_skips_hidden_files(delta, tmp_path, monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    folder = delta.save_pretrained(tmp_path / "d")
    (folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    (folder / ".slug_audit.json.k3j2.tmp").write_text("{partial")
    with pytest.warns(UserWarning, match="not uploading hidden entries.*\\.env"):
        push_to_hub(folder, "org/forget-ada")
    files = RecordingApi.calls[-1][2]["files"]
    assert files == ["README.md", "slug_config.json", "slug_model.safetensors"]


def test_an_audit_save_that_fails_keeps_the_previous_files(tmp_path, monkeypatch):
    report = AuditReport(concept="Ada Byron", budget="quick", rows=[])
    report.save(tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in (AUDIT_NAME, AUDIT_TABLE, AUDIT_PLOT)}

    def broken_plot(self, path):
        raise RuntimeError("no display")

    monkeypatch.setattr(AuditReport, "plot", broken_plot)
    changed = AuditReport(concept="Bob Stone", budget="quick", rows=[])
    with pytest.raises(RuntimeError, match="no display"), warnings.catch_warnings():
        changed.save(tmp_path)
    after = {n: (tmp_path / n).read_bytes() for n in (AUDIT_NAME, AUDIT_TABLE, AUDIT_PLOT)}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)  # no temp files left


def test_the_cli_writes_delta_plot_and_report_together(tmp_path, monkeypatch):
    tiny_clip().save_pretrained(tmp_path / "model")
    tiny_processor().save_pretrained(tmp_path / "model")
    for name, captions in (("forget", ["a photo of Ada Byron"] * 4), ("retain", ["a thing"] * 6)):
        (tmp_path / name).mkdir()
        for i, image in enumerate(random_images(len(captions), seed=len(name))):
            image.save(tmp_path / name / f"{i}.png")
            (tmp_path / name / f"{i}.txt").write_text(captions[i])
    args = ["unlearn", "--model", str(tmp_path / "model"), "--concept", "Ada Byron"]
    args += ["--forget", str(tmp_path / "forget"), "--retain", str(tmp_path / "retain")]
    args += ["--labels", "Ada Byron,Bob Stone", "--forget-target", "1", "--tower", "text"]
    args += ["--validation-share", "0", "--quiet", "--out", str(tmp_path / "delta")]

    def broken_plot(self, path):
        raise RuntimeError("no display")

    monkeypatch.setattr(UnlearningResult, "plot_pareto", broken_plot)
    assert main(args) != 0  # reported as "hf-slug: error: RuntimeError: no display"
    assert not (tmp_path / "delta").exists()  # not a delta without its report
    monkeypatch.undo()
    assert main(args) == 0
    written = sorted(p.name for p in (tmp_path / "delta").iterdir())
    assert written == ["pareto.png", "report.json", "slug_config.json", "slug_model.safetensors"]


def test_an_unknown_loading_keyword_names_the_ones_that_exist(delta, tmp_path):
    folder = delta.save_pretrained(tmp_path / "d")
    with pytest.raises(ConfigError, match="unknown keyword argument.*'revison'.*revision="):
        SLUGModel(tiny_clip()).load_adapter(folder, revison="main")
    with pytest.raises(ConfigError, match="'subfoldr'"):
        ConceptDelta.from_pretrained(folder, subfoldr="x")
