"""The baselines compare_methods.py runs: the real SalUn (random labels on the saliency mask) and
the SLUG paper's mask+GAFT variant, on a tiny random CLIP (behaviour only, no timings)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import random_images

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from baselines import (  # noqa: E402
    IterativeConfig,
    preprocess,
    relabel_captions,
    run_iterative,
    saliency_mask,
)

NAMES = ["Ada Byron", "Alan Kay", "Grace Hopper", "Edsger Dijkstra"]
TARGET = "Ada Byron"


def pairs(captions: list[str], seed: int = 0) -> list[tuple]:
    return list(zip(random_images(len(captions), seed=seed), captions))


FORGET = [f"a photo of {TARGET}", f"{TARGET} smiling", f"portrait of {TARGET}, outdoors"] * 2
RETAIN = [f"a photo of {n}" for n in NAMES[1:]] + ["a red square", "a blue circle"]


def test_relabelling_uses_other_candidates_only_and_keeps_the_template() -> None:
    relabelled = relabel_captions(pairs(FORGET * 5), TARGET, NAMES, seed=3)
    labels = set()
    for (_, old), (_, new) in zip(pairs(FORGET * 5), relabelled):
        assert TARGET not in new
        label = next(n for n in NAMES if n in new)
        assert label != TARGET and new == old.replace(TARGET, label)  # same template
        labels.add(label)
    assert labels == set(NAMES) - {TARGET}  # 30 draws reach every other candidate
    assert relabelled == relabel_captions(pairs(FORGET * 5), TARGET, NAMES, seed=3)  # drawn once


def test_relabelling_refuses_what_it_cannot_relabel() -> None:
    with pytest.raises(ValueError, match="no forget caption names"):
        relabel_captions(pairs(["a red square"]), TARGET, NAMES)
    with pytest.raises(ValueError, match="other than"):
        relabel_captions(pairs(FORGET), TARGET, [TARGET])
    with pytest.raises(ValueError, match="candidates"):
        IterativeConfig("SalUn")  # no concept or candidates: nothing to relabel with


@pytest.mark.parametrize("method", ["SalUn", "MaskGAFT"])
def test_masked_methods_move_only_the_salient_entries(model, processor, method: str) -> None:
    torch.manual_seed(0)
    forget, retain = pairs(FORGET, seed=1), pairs(RETAIN, seed=2)
    config = IterativeConfig(
        method, lr=1e-2, max_steps=3, batch_size=4, concept=TARGET, candidates=tuple(NAMES)
    )
    mask = saliency_mask(model, preprocess(forget, processor, 4), config.saliency)
    by_name = {n: mask[p].bool() for n, p in model.named_parameters()}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    outcome = run_iterative(model, processor, forget, retain, lambda m: 1.0, config, progress=False)
    assert not outcome.reached and outcome.steps == 3  # the check never passed: the full budget
    moved = 0
    for name, p in model.named_parameters():
        changed = p.detach() != before[name]
        assert not (changed & ~by_name[name]).any(), f"{name} moved outside the saliency mask"
        moved += int(changed.sum())
    assert moved > 0
    settings = outcome.settings
    assert 0 < settings["trainable_fraction"] < 1
    if method == "SalUn":  # descent on relabelled captions, never the target's own name
        assert len(settings["relabelled"]) == len(FORGET)
        assert all(TARGET not in c for c in settings["relabelled"])
        assert all("relabelled_loss" in h and "forget_loss" not in h for h in outcome.history)
    else:  # the ascent + fine-tuning variant
        assert all("forget_loss" in h and "relabelled_loss" not in h for h in outcome.history)


def test_old_tuning_json_reads_its_salun_as_the_mask_variant(tmp_path: Path) -> None:
    from tune_baselines import previous

    old = {
        "command": "python benchmarks/tune_baselines.py",
        "chosen_lr": {"GA": 3e-5, "SalUn": 1e-4},
        "runs": [{"method": "GA", "lr": 3e-5}, {"method": "SalUn", "lr": 1e-4}],
    }
    path = tmp_path / "tune_baselines.json"
    path.write_text(json.dumps(old))
    runs, chosen = previous(path, ["SalUn"])  # SalUn re-tuned: the old mask runs stay MaskGAFT
    assert chosen == {"GA": 3e-5, "MaskGAFT": 1e-4}
    assert {r["method"] for r in runs} == {"GA", "MaskGAFT"}


def test_intervals_pool_the_test_views_of_every_seed() -> None:
    from compare_methods import pooled_interval, spread, wilson

    low, high = wilson(0, 72)  # 0 of 72 views recognised: still up to ~5 % at 95 %
    assert low == 0 and 5.0 < high < 5.2
    one_seed = ({"forget_acc": 0.0}, {"forget": 24})
    assert pooled_interval("identity", "FA@1", [one_seed] * 3) == wilson(0, 72)
    raw = {"object_acc": 0.5, "style_acc": 0.5, "digit_acc": 1.0}
    counts = {"object": 100, "style": 100, "digit": 100}
    low, high = pooled_interval("identity", "utility", [(raw, counts)])  # mean of three
    assert low < 100 * 2 / 3 < high and high - low < 12
    assert spread([0.0, 12.5, 25.0]) == {"mean": 12.5, "sd": 12.5, "min": 0.0, "max": 25.0, "n": 3}
