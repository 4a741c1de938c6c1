"""Adversarial report items 5-9, 11, 13, 14 and the model card's escaping: weights that would
write NaN/inf (in any dtype), duplicate adapter names, symlinks pushed to the Hub, a single
adapter pushed without its weight, bad storage dtypes and paths, bad repo ids. Every case here
failed (raw error, or silent corruption) before the fix. Table-driven; no network."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import pytest
import torch
from test_adapters import make_delta
from test_hub import RecordingApi, api  # noqa: F401  (the `api` fixture)
from trust_fixtures import FC1, V_PROJ, base_fixture, two_deltas  # noqa: F401  (`base`)

from hf_slug import (
    AdapterError,
    ConceptDelta,
    ConfigError,
    HubError,
    NonFiniteGradientError,
    SLUGError,
)
from hf_slug.cli import main
from hf_slug.hub import END, model_card, push_to_hub
from hf_slug.model import SLUGModel


@pytest.fixture(scope="module")
def half(base):
    return copy.deepcopy(base).half()


@pytest.fixture(scope="module")
def deltas(base, half):
    return {
        **two_deltas(base),
        "a16": make_delta(half, "Ada Byron", [FC1], 0),
        "b16": make_delta(half, "Bob Stone", [FC1], 1),
    }


def params_of(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def unchanged(model, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def fp16_overflow(delta) -> float:
    """A weight that takes the delta past float16's range (65504) but not float32's."""
    return 1e6 / float(delta.tensors[FC1].abs().max())


# -- 5. ConceptDelta.apply_to: all or nothing --------------------------------------------------
def _nan_delta(d):
    bad = copy.deepcopy(d)
    bad.tensors[FC1][0, 0] = math.nan
    return bad


APPLY_TO = [
    pytest.param("a", False, lambda d: math.nan, NonFiniteGradientError, "not a finite", id="nan"),
    pytest.param("a", False, lambda d: math.inf, NonFiniteGradientError, "not a finite", id="inf"),
    pytest.param("a", False, lambda d: 1e39, NonFiniteGradientError, "weighted delta", id="1e39"),
    pytest.param("a", False, lambda d: "0.5", AdapterError, "must be a number", id="str-weight"),
    pytest.param("a", False, lambda d: True, AdapterError, "must be a number", id="bool-weight"),
    pytest.param("a16", True, fp16_overflow, NonFiniteGradientError, "float16", id="fp16-overflow"),
    pytest.param(
        "a", False, lambda d: 1.0, NonFiniteGradientError, "NaN/inf", id="delta-holds-nan"
    ),
]


@pytest.mark.parametrize(("key", "fp16", "weight", "error", "match"), APPLY_TO)
def test_apply_to_refuses_and_writes_nothing(base, half, deltas, key, fp16, weight, error, match):
    delta = _nan_delta(deltas[key]) if match == "NaN/inf" else deltas[key]
    model = copy.deepcopy(half if fp16 else base)
    before = params_of(model)
    with pytest.raises(error, match=match):
        delta.apply_to(model, weight(delta))
    assert unchanged(model, before)


def test_apply_to_still_applies_a_good_weight(base, deltas):
    model = deltas["a"].apply_to(copy.deepcopy(base), 0.5)
    expected = dict(base.named_parameters())[FC1] + 0.5 * deltas["a"].tensors[FC1]
    assert torch.allclose(dict(model.named_parameters())[FC1], expected)


# -- 6. SLUGModel in float16: nothing non-finite hooked or written, state rolled back ----------
def _set_big_merged(slug, d):
    slug.add_adapter("a", d["a16"])
    slug.merge_adapter()
    slug.set_adapters(["a"], [fp16_overflow(d["a16"])])


def _add_big_merged(slug, d):
    slug.add_adapter("a", d["a16"])
    slug.merge_adapter()
    slug.add_adapter("b", d["b16"], fp16_overflow(d["b16"]))


def _add_big_unmerged(slug, d):
    slug.add_adapter("a", d["a16"], fp16_overflow(d["a16"]))


def _activate_big_unmerged(slug, d):
    slug.add_adapter("a", d["a16"], fp16_overflow(d["a16"]), active=False)
    slug.set_adapters(["a"])


def _set_big_disabled(slug, d):
    slug.add_adapter("a", d["a16"])
    with slug.disable_adapters():  # checked now, not when the block ends
        slug.set_adapters(["a"], [fp16_overflow(d["a16"])])


FP16 = [
    pytest.param(_set_big_disabled, {"a": 1.0}, ["a"], False, id="disabled-set_adapters"),
    pytest.param(_set_big_merged, {"a": 1.0}, ["a"], True, id="merged-set_adapters"),
    pytest.param(_add_big_merged, {"a": 1.0}, ["a"], True, id="merged-add_adapter"),
    pytest.param(_add_big_unmerged, {}, [], False, id="unmerged-add_adapter"),
    pytest.param(_activate_big_unmerged, None, [], False, id="unmerged-activate"),
]


@pytest.mark.parametrize(("operation", "weights", "active", "merged"), FP16)
def test_float16_overflow_is_refused_and_rolled_back(
    half, deltas, operation, weights, active, merged
):
    slug = SLUGModel(copy.deepcopy(half))
    before = params_of(slug.model)
    with pytest.raises(NonFiniteGradientError, match="float16"):
        operation(slug, deltas)
    if weights is not None:
        assert slug.weights == weights
    assert slug.active_adapters == active and slug.merged is merged
    for p in slug.model.parameters():
        assert torch.isfinite(p).all()
    fc1 = slug.model.vision_model.encoder.layers[0].mlp.fc1
    assert torch.isfinite(fc1(torch.randn(2, fc1.in_features, dtype=torch.float16))).all()
    slug.unload()
    assert unchanged(slug.model, before)


def test_float32_hooks_refuse_a_row_sum_that_overflows(base, deltas):
    """Each element of w·Δ fits float32, but a row's sum does not: every output would be inf."""
    slug = SLUGModel(copy.deepcopy(base))
    big = copy.deepcopy(deltas["a"])
    big.tensors[FC1] = big.tensors[FC1].sign() * 3e37  # 32 inputs: each row sums to ~1e39
    with pytest.raises(NonFiniteGradientError, match="sums to"):
        slug.add_adapter("a", big)
    assert slug.adapters == {} and slug._base == {}


# -- 7. duplicate adapter names ----------------------------------------------------------------
DUPLICATES = [
    pytest.param(lambda s, tmp: s.set_adapters(["a", "a"]), id="set_adapters"),
    pytest.param(lambda s, tmp: s.set_adapters(["a", "A"]), id="set_adapters-case"),
    pytest.param(lambda s, tmp: s.to_peft_lora(tmp / "lora", adapter_names=["a", "a"]), id="peft"),
    pytest.param(lambda s, tmp: s.add_weighted_adapter(["a", "a"], [1, 1], "c"), id="weighted"),
    pytest.param(lambda s, tmp: s.save_pretrained(tmp / "stack", ["a", "a"]), id="save"),
    pytest.param(lambda s, tmp: s.push_to_hub("me/x", selected_adapters=["a", "a"]), id="push"),
]


@pytest.mark.parametrize("operation", DUPLICATES)
def test_duplicate_adapter_names_are_refused(base, deltas, tmp_path, api, operation):  # noqa: F811
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("a", deltas["a"])
    with pytest.raises(AdapterError, match="twice"):
        operation(slug, tmp_path)
    assert slug.active_adapters == ["a"] and slug.weights == {"a": 1.0}
    assert not list(tmp_path.iterdir()) and api.calls == []


# -- 8. push_to_hub refuses links and special files --------------------------------------------
def _symlink_file(folder: Path, outside: Path) -> None:
    os.symlink(outside / "secret.txt", folder / "notes.txt")


def _symlink_dir(folder: Path, outside: Path) -> None:
    os.symlink(outside, folder / "extras")


def _nested_symlink(folder: Path, outside: Path) -> None:
    (folder / "images").mkdir()
    os.symlink(outside / "secret.txt", folder / "images" / "a.png")


def _fifo(folder: Path, outside: Path) -> None:
    os.mkfifo(folder / "pipe")


LINKS = [
    pytest.param(_symlink_file, "notes.txt", id="file-link"),
    pytest.param(_symlink_dir, "extras", id="folder-link"),
    pytest.param(_nested_symlink, "a.png", id="nested-link"),
    pytest.param(_fifo, "pipe", id="fifo"),
]


@pytest.mark.parametrize(("plant", "name"), LINKS)
@pytest.mark.parametrize("via", ["library", "cli"])
def test_push_refuses_links_out_of_the_folder(deltas, tmp_path, api, plant, name, via):  # noqa: F811
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP SECRET")
    folder = tmp_path / "delta"
    deltas["a"].save_pretrained(folder)
    plant(folder, outside)
    if via == "library":
        with pytest.raises(HubError, match=name):
            push_to_hub(folder, "me/forget-ada")
    else:
        assert main(["push", str(folder), "--repo-id", "me/forget-ada"]) != 0
    assert api.calls == []  # refused before the repo is even created


def test_push_uploads_a_plain_folder_with_subfolders(deltas, tmp_path, api):  # noqa: F811
    folder = tmp_path / "delta"
    deltas["a"].save_pretrained(folder)
    (folder / "images").mkdir()
    (folder / "images" / "a.png").write_bytes(b"png")
    push_to_hub(folder, "me/forget-ada")
    upload = api.calls[-1]
    assert "images/a.png" in upload[2]["files"]


# -- 9. SLUGModel.push_to_hub keeps a single adapter's weight, state and name ------------------
class CopyingApi(RecordingApi):
    """Keeps a copy of each uploaded folder, to load it back."""

    store: Path

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        import shutil

        shutil.copytree(folder_path, self.store / repo_id.replace("/", "__"))
        return super().upload_folder(repo_id=repo_id, folder_path=folder_path, **kwargs)


ROUND_TRIPS = [
    pytest.param("ada_byron", 1.0, True, "slug_config.json", id="plain-is-bare"),
    pytest.param("ada_byron", 0.5, True, "slug_stack.json", id="weight"),
    pytest.param("ada_byron", 1.0, False, "slug_stack.json", id="inactive"),
    pytest.param("mine", 1.0, True, "slug_stack.json", id="name"),
]


@pytest.mark.parametrize(("name", "weight", "active", "marker"), ROUND_TRIPS)
def test_single_adapter_push_round_trips(
    base, deltas, tmp_path, monkeypatch, name, weight, active, marker
):
    import huggingface_hub

    CopyingApi.calls, CopyingApi.store = [], tmp_path
    monkeypatch.setattr(huggingface_hub, "HfApi", CopyingApi)
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter(name, deltas["a"], weight, active=active)
    slug.push_to_hub("me/forget-ada")
    uploaded = tmp_path / "me__forget-ada"
    assert (uploaded / marker).is_file()
    back = SLUGModel.from_pretrained(copy.deepcopy(base), uploaded)
    assert back.weights == slug.weights and back.active_adapters == slug.active_adapters
    ours, theirs = (s.model.vision_model.encoder.layers[0].mlp.fc1 for s in (slug, back))
    x = torch.randn(2, ours.in_features)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x))


# -- 11 and 14. storage dtypes and path arguments ----------------------------------------------
SAVES = [
    pytest.param(lambda d, s, tmp: d.save_pretrained(tmp / "x", dtype=torch.int8), id="int8"),
    pytest.param(lambda d, s, tmp: d.save_pretrained(tmp / "x", dtype=torch.bool), id="bool"),
    pytest.param(lambda d, s, tmp: d.save_pretrained(tmp / "x", dtype="float16"), id="str-dtype"),
    pytest.param(
        lambda d, s, tmp: d.save_pretrained(tmp / "x", dtype=torch.complex64), id="complex64"
    ),
    pytest.param(
        lambda d, s, tmp: d.save_pretrained(tmp / "x", dtype=torch.float8_e4m3fn), id="float8"
    ),
    pytest.param(lambda d, s, tmp: s.save_pretrained(tmp / "x", dtype=torch.int8), id="stack-int8"),
    pytest.param(lambda d, s, tmp: d.save_pretrained(None), id="save-None"),
    pytest.param(lambda d, s, tmp: d.save_pretrained(""), id="save-empty"),
    pytest.param(lambda d, s, tmp: s.save_pretrained(None), id="stack-save-None"),
    pytest.param(lambda d, s, tmp: ConceptDelta.from_pretrained(None), id="load-None"),
    pytest.param(lambda d, s, tmp: ConceptDelta.from_pretrained(123), id="load-int"),
    pytest.param(lambda d, s, tmp: s.load_adapter(None), id="load_adapter-None"),
]


@pytest.mark.parametrize("operation", SAVES)
def test_bad_dtypes_and_paths_are_config_errors(base, deltas, tmp_path, monkeypatch, operation):
    monkeypatch.chdir(tmp_path)
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("a", deltas["a"])
    with pytest.raises(ConfigError, match=r"dtype|folder path"):
        operation(deltas["a"], slug, tmp_path)
    assert not (tmp_path / "x").exists()
    assert list(slug.adapters) == ["a"]


@pytest.mark.parametrize("dtype", [None, torch.float32, torch.float16, torch.bfloat16])
def test_allowed_storage_dtypes_round_trip(deltas, tmp_path, dtype):
    deltas["a"].save_pretrained(tmp_path / "x", dtype=dtype)
    loaded = ConceptDelta.from_pretrained(tmp_path / "x")
    assert loaded.tensors[FC1].dtype == (dtype or torch.float32)


# -- 13. bad repo ids --------------------------------------------------------------------------
BAD_IDS = ["bad id", "noslash", "a/b c", "a/..", "-a/b", "a/b/c", "a/" + "x" * 100]


@pytest.mark.parametrize("repo_id", BAD_IDS)
def test_bad_repo_ids_are_refused_before_anything(deltas, tmp_path, api, capsys, repo_id):  # noqa: F811
    folder = tmp_path / "delta"
    deltas["a"].save_pretrained(folder)
    assert main(["push", str(folder), f"--repo-id={repo_id}"]) == 2
    assert "repo id" in capsys.readouterr().err
    with pytest.raises(HubError, match="repo id"):
        push_to_hub(folder, repo_id)
    assert api.calls == [] and not (folder / "README.md").exists()


# -- the model card: concept text cannot break its table or section ----------------------------
NASTY = [
    pytest.param(f"Ada {END} Byron", id="end-marker"),
    pytest.param("Ada <!-- hf_slug:begin --> Byron", id="begin-marker"),
    pytest.param("Ada | Byron", id="pipe"),
    pytest.param("Ada\nByron\r\n| x |", id="newlines"),
]


@pytest.mark.parametrize("concept", NASTY)
def test_card_escapes_concept_text(base, tmp_path, concept):
    delta = make_delta(base, concept, [FC1], 0)
    delta.config.metrics = {"before": {"acc | x": 1.0}, "after": {"acc | x": 0.5}}
    delta.save_pretrained(tmp_path / "d")
    card = model_card(tmp_path / "d", "me/x")
    assert card.count(END) == 1 and card.count("<!-- hf_slug:begin") == 1
    table = [line for line in card.splitlines() if line.startswith("| concept |")]
    assert len(table) == 1 and table[0].replace("\\|", "").count("|") == 3
    (tmp_path / "d" / "README.md").write_text(card + "\nmy own notes\n")
    again = model_card(tmp_path / "d", "me/x")  # the section is found and replaced, not doubled
    assert again.count(END) == 1 and "my own notes" in again


def test_every_error_here_is_a_slug_error():
    for error in (AdapterError, ConfigError, HubError, NonFiniteGradientError):
        assert issubclass(error, SLUGError)
