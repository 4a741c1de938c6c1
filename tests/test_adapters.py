"""SLUGModel and ConceptDelta: save/load, stack, weight, merge, errors, PEFT export.

Table-driven over tiny CLIP configurations.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import random_images, tiny_clip

from hf_slug import (
    AdapterError,
    ConceptDelta,
    DeltaFormatError,
    FingerprintMismatchError,
    NonFiniteGradientError,
    UnlearningConfig,
    UnlearnOptions,
)
from hf_slug.config import CONFIG_NAME, WEIGHTS_NAME, TargetInfo
from hf_slug.io import fingerprint
from hf_slug.model import SLUGModel

CONFIGS = [
    pytest.param(dict(width=32, layers=2, projection=16), id="w32-l2"),
    pytest.param(dict(width=48, layers=1, projection=24), id="w48-l1"),
]
TARGETS = {
    "a": ["vision_model.encoder.layers.0.mlp.fc1.weight"],
    "b": ["text_model.encoder.layers.0.self_attn.v_proj.weight", "visual_projection.weight"],
    "c": ["vision_model.encoder.layers.0.mlp.fc1.weight"],  # same tensor as "a"
}


def make_delta(model, concept: str, names: list[str], seed: int, scale: float = 0.3):
    """A dense delta on `names` with correct fingerprints (values: scaled random directions)."""
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    tensors, targets = {}, {}
    for name in names:
        p = params[name].detach()
        direction = torch.randn(p.shape, generator=generator)
        tensors[name] = direction * (scale * p.norm() / direction.norm())
        targets[name] = TargetInfo(
            list(p.shape),
            str(p.dtype).removeprefix("torch."),
            fingerprint(p),
            "vision" if "vis" in name else "text",
        )
    return ConceptDelta(UnlearningConfig(concept=concept, step=scale, targets=targets), tensors)


@pytest.fixture(params=CONFIGS)
def setup(request, processor):
    model = tiny_clip(seed=0, **request.param)
    inputs = processor(
        text=["a photo of Ada Byron", "a cat"],
        images=random_images(3, seed=9),
        return_tensors="pt",
        padding=True,
    )
    deltas = {
        k: make_delta(model, f"concept {k}", names, seed=i)
        for i, (k, names) in enumerate(TARGETS.items())
    }
    return model, inputs, deltas, request.param


def logits(model_or_slug, inputs):
    with torch.no_grad():
        return model_or_slug(**inputs).logits_per_image


def edited_by_hand(setup_model, deltas_and_weights):
    model = copy.deepcopy(setup_model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for delta, weight in deltas_and_weights:
            for name, value in delta.dense().items():
                params[name].add_(weight * value)
    return model


def test_unmerged_stack_equals_base_plus_weighted_deltas(setup):
    model, inputs, deltas, _ = setup
    want = logits(edited_by_hand(model, [(deltas["a"], 0.7), (deltas["b"], -0.4)]), inputs)
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"])
    slug.set_adapters(["a", "b"], [0.7, -0.4])
    torch.testing.assert_close(logits(slug, inputs), want, atol=1e-5, rtol=1e-5)


def test_merged_unmerged_and_merge_and_unload_agree_and_differ_from_base(setup):
    model, inputs, deltas, _ = setup
    base = logits(model, inputs)
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"])
    unmerged = logits(slug, inputs)
    slug.merge_adapter()
    assert slug.merged
    merged = logits(slug, inputs)
    unloaded = logits(slug.merge_and_unload(), inputs)
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unloaded, merged, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(unmerged, base, atol=1e-3)
    assert not slug.adapters and not slug._hooks


def test_disabled_equals_base_and_unmerge_restores_it(setup):
    model, inputs, deltas, _ = setup
    base = logits(model, inputs)
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    with slug.disable_adapters():
        assert slug.active_adapters == []
        assert torch.equal(logits(slug, inputs), base)
    assert slug.active_adapters == ["a"]
    slug.merge_adapter()
    with slug.disable_adapters():
        assert torch.equal(logits(slug, inputs), base)
    slug.unmerge_adapter()
    for name, p in slug.model.named_parameters():
        torch.testing.assert_close(p, dict(model.named_parameters())[name], atol=1e-6, rtol=0)
    assert torch.equal(logits(slug.unload(), inputs), base)


def test_a_b_and_a_plus_b_all_differ(setup):
    model, inputs, deltas, _ = setup
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"])
    outputs = {}
    for names in (["a"], ["b"], ["a", "b"]):
        slug.set_adapters(names)
        outputs["+".join(names)] = logits(slug, inputs)
    assert not torch.allclose(outputs["a"], outputs["b"])
    assert not torch.allclose(outputs["a"], outputs["a+b"])
    assert not torch.allclose(outputs["b"], outputs["a+b"])


def test_weighted_stack_equals_add_weighted_adapter(setup):
    model, inputs, deltas, _ = setup
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"])
    slug.set_adapters(["a", "b"], [0.5, 2.0])
    stacked = logits(slug, inputs)
    slug.add_weighted_adapter(["a", "b"], [0.5, 2.0], "ab")
    assert slug.active_adapters == ["a", "b"]  # the new adapter is added inactive
    slug.set_adapter("ab")
    torch.testing.assert_close(logits(slug, inputs), stacked, atol=1e-5, rtol=1e-5)


def test_two_deltas_on_one_tensor_add_up_with_a_warning(setup):
    model, inputs, deltas, _ = setup
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    with pytest.warns(UserWarning, match="deltas add up"):
        slug.add_adapter("c", deltas["c"])
    want = logits(edited_by_hand(model, [(deltas["a"], 1.0), (deltas["c"], 1.0)]), inputs)
    torch.testing.assert_close(logits(slug, inputs), want, atol=1e-5, rtol=1e-5)


def test_delete_leaves_no_state_behind(setup):
    model, inputs, deltas, _ = setup
    base = logits(model, inputs)
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"])
    slug.delete_adapter("a")
    slug.delete_adapter("b")
    assert not (slug.adapters or slug.weights or slug.targets or slug._base or slug._hooks)
    assert slug.active_adapters == []
    assert torch.equal(logits(slug, inputs), base)
    with pytest.raises(AdapterError, match="no adapter named"):
        slug.delete_adapter("a")


def test_save_load_round_trip_gives_identical_outputs(setup, tmp_path):
    model, inputs, deltas, config = setup
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"], weight=0.5)
    slug.save_pretrained(tmp_path / "stack")
    fresh = SLUGModel.from_pretrained(tiny_clip(seed=0, **config), tmp_path / "stack")
    assert fresh.weights == {"a": 1.0, "b": 0.5}
    assert torch.equal(logits(fresh, inputs), logits(slug, inputs))
    single = SLUGModel.from_pretrained(tiny_clip(seed=0, **config), tmp_path / "stack" / "a")
    assert single.active_adapters == ["concept_a"]


@pytest.mark.parametrize("rank", [None, 0.999])
def test_low_rank_storage(setup, tmp_path, rank):
    model, _, deltas, _ = setup
    lowrank, errors = deltas["b"].to_lowrank(rank)
    assert max(errors.values()) <= (1e-5 if rank is None else 0.04)
    lowrank.save_pretrained(tmp_path / "lr", dtype=torch.float16)
    loaded = ConceptDelta.from_pretrained(tmp_path / "lr")
    assert loaded.config.delta_format == "lowrank" and loaded.config.delta_dtype == "float16"
    for name, value in deltas["b"].dense().items():
        assert float((loaded.dense()[name] - value).norm() / value.norm()) < 0.05


def test_safe_merge_refuses_non_finite_deltas(setup):
    """add_adapter refuses a NaN/inf delta; one corrupted after adding is refused by the merges
    (safe_merge is the default)."""
    model, _, deltas, _ = setup
    bad = copy.deepcopy(deltas["a"])
    next(iter(bad.tensors.values()))[0, 0] = float("inf")
    slug = SLUGModel(copy.deepcopy(model))
    with pytest.raises(NonFiniteGradientError, match="NaN/inf"):
        slug.add_adapter("bad", bad)
    slug.add_adapter("later_bad", copy.deepcopy(deltas["a"]))
    next(iter(slug.adapters["later_bad"].tensors.values()))[0, 0] = float("inf")
    with pytest.raises(NonFiniteGradientError, match="refusing to merge"):
        slug.merge_adapter()
    with pytest.raises(NonFiniteGradientError):
        slug.merge_and_unload()
    for name, p in slug.model.named_parameters():
        assert torch.equal(p, dict(model.named_parameters())[name])


def test_fingerprint_mismatch_raises_with_an_opt_out(setup):
    model, _, deltas, config = setup
    other = tiny_clip(seed=1, **config)  # same architecture, other weights
    with pytest.raises(FingerprintMismatchError) as error:
        SLUGModel(other).add_adapter("a", deltas["a"])
    message = str(error.value)
    assert deltas["a"].config.targets[deltas["a"].names[0]].sha256[:16] in message
    assert fingerprint(dict(other.named_parameters())[deltas["a"].names[0]])[:16] in message
    assert "check_fingerprint=False" in message
    SLUGModel(other).add_adapter("a", deltas["a"], check_fingerprint=False)


def _saved(delta, folder):
    delta.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        ("truncate", DeltaFormatError, "truncated or corrupt"),
        ("garbage", DeltaFormatError, "truncated or corrupt"),
        ("no_config", DeltaFormatError, "holds no hf_slug delta"),
        ("missing_key", DeltaFormatError, "lacks required key"),
        ("bad_json", DeltaFormatError, "not valid JSON"),
        ("wrong_shape", DeltaFormatError, "shape"),
    ],
)
def test_damaged_folders_get_clear_errors(setup, tmp_path, damage, error, match):
    _, _, deltas, _ = setup
    folder = _saved(deltas["a"], tmp_path / "a")
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "no_config":
        config.unlink()
    elif damage == "missing_key":
        data = json.loads(config.read_text())
        del data["targets"]
        config.write_text(json.dumps(data))
    elif damage == "bad_json":
        config.write_text("{not json")
    elif damage == "wrong_shape":
        data = json.loads(config.read_text())
        for info in data["targets"].values():
            info["shape"] = [3, 3]
        config.write_text(json.dumps(data))
    with pytest.raises(error, match=match):
        ConceptDelta.from_pretrained(folder)


def test_unknown_config_key_warns_and_loads(setup, tmp_path):
    _, _, deltas, _ = setup
    folder = _saved(deltas["a"], tmp_path / "a")
    data = json.loads((folder / CONFIG_NAME).read_text())
    data["from_the_future"] = 1
    (folder / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="from_the_future"):
        assert ConceptDelta.from_pretrained(folder).config.concept == "concept a"


def test_delta_for_a_parameter_the_model_lacks(setup):
    model, _, deltas, _ = setup
    delta = copy.deepcopy(deltas["a"])
    name = delta.names[0]
    missing = name.replace("layers.0", "layers.7")
    delta.tensors = {missing: delta.tensors.pop(name)}
    delta.config.targets = {missing: delta.config.targets.pop(name)}
    with pytest.raises(DeltaFormatError, match="does not have"):
        SLUGModel(copy.deepcopy(model)).add_adapter("x", delta)


def test_failure_in_the_middle_of_save_keeps_the_previous_files(setup, tmp_path, monkeypatch):
    _, _, deltas, _ = setup
    folder = _saved(deltas["a"], tmp_path / "a")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken_write(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("hf_slug.delta.write_json", broken_write)
    with pytest.raises(OSError, match="disk full"):
        deltas["b"].save_pretrained(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@pytest.mark.parametrize("rank", [None, 2])
def test_peft_export_loads_in_peft_and_reproduces_the_delta(setup, tmp_path, rank):
    peft = pytest.importorskip("peft")
    model, inputs, deltas, config = setup
    slug = SLUGModel(copy.deepcopy(model))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"], weight=0.5)
    report = slug.to_peft_lora(tmp_path / "lora", rank=rank)
    assert (tmp_path / "lora" / "adapter_config.json").exists()
    peft_model = peft.PeftModel.from_pretrained(tiny_clip(seed=0, **config), tmp_path / "lora")
    merged = peft_model.merge_and_unload()
    want = slug._sum()
    for name, value in want.items():
        got = (
            dict(merged.named_parameters())[name] - dict(model.named_parameters())[name]
        ).detach()
        error = float((got - value).norm() / value.norm())
        if rank is None:
            assert error <= 1e-5, name
        else:
            assert error == pytest.approx(
                report.relative_errors[name.removesuffix(".weight")], abs=1e-4
            )
    if rank is None:
        torch.testing.assert_close(
            logits(peft_model, inputs), logits(slug, inputs), atol=1e-4, rtol=1e-4
        )
    else:
        assert set(report.ranks.values()) == {2}
        assert report.max_relative_error > 1e-3  # a random delta is not rank 2


def test_adding_an_unlearning_result_directly(processor):
    from hf_slug import SLUGConfig, unlearn

    model = tiny_clip()
    forget = (random_images(4, seed=1), ["Ada Byron"] * 4)
    retain = (random_images(6, seed=2), [f"thing {i}" for i in range(6)])
    result = unlearn(
        model,
        processor,
        forget,
        retain,
        SLUGConfig(
            concept="Ada Byron",
            towers="text",
            candidate_labels=["Ada Byron", "Bob Stone"],
            validation_share=0,  # 4 images: plumbing only, scored in-sample (and labelled so)
            forget_target=1.0,  # a random model: the first trial passes, so a delta exists
        ),
        options=UnlearnOptions(progress=False),
    )
    slug = SLUGModel(model)
    slug.add_adapter("ada", result)
    config = slug.adapters["ada"].config
    assert config.concept == "Ada Byron" and config.step == result.step
    assert config.targets.keys() == result.deltas.keys()
    assert config.scales and config.metrics["layer"] == list(result.chosen_names)
