"""The forget criterion's scoring: mean embedding vs any single phrasing, and the margin."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hf_slug import ConfigError, ZeroShotTask
from hf_slug.audit.phrasings import templates as audit_templates
from hf_slug.evaluation import _accuracy
from hf_slug.phrasings import CRITERION_TEMPLATES, criterion_templates

LABELS = ["ada", "bob"]


def _task(**kwargs) -> ZeroShotTask:
    defaults = {"templates": ("{} one", "{} two")}
    return ZeroShotTask("forget", [None], ["ada"], LABELS, **{**defaults, **kwargs})


def _features(image, texts):
    # texts are stored label by label: ada/one, ada/two, bob/one, bob/two
    return F.normalize(torch.tensor([image]), dim=-1), F.normalize(torch.tensor(texts), dim=-1)


# The image sits close to "ada two" only; averaged, ada's prompts lose to bob's.
IMAGE = [1.0, 0.0, 0.0]
TEXTS = [[-1.0, 0.2, 0.0], [1.0, 0.05, 0.0], [0.6, 0.8, 0.0], [0.6, -0.8, 0.0]]
OWNERS = torch.tensor([0, 0, 1, 1])
TRUTH = torch.tensor([0])


@pytest.mark.parametrize(
    ("scoring", "margin", "expected_top1"),
    [("mean", 0.0, 0.0), ("any", 0.0, 1.0), ("mean", 0.95, 1.0), ("mean", 0.9, 0.0)],
    ids=["mean-misses", "one-phrasing-names-it", "margin-counts-a-near-miss", "beyond-the-margin"],
)
def test_scoring_and_margin(scoring, margin, expected_top1):
    image_f, text_f = _features(IMAGE, TEXTS)
    task = _task(scoring=scoring, margin=margin)
    top1, _ = _accuracy(image_f, text_f, OWNERS, TRUTH, task)
    assert top1 == expected_top1


def test_mean_scoring_without_margin_is_plain_top1_of_averaged_prompts():
    torch.manual_seed(0)
    image_f = F.normalize(torch.randn(50, 8), dim=-1)
    text_f = F.normalize(torch.randn(6, 8), dim=-1)
    owners, truth = torch.tensor([0, 0, 1, 1, 2, 2]), torch.randint(0, 3, (50,))
    task = ZeroShotTask("t", [None] * 50, ["a"] * 50, ["a", "b", "c"], templates=("{}", "x {}"))
    labels = F.normalize(torch.zeros(3, 8).index_add_(0, owners, text_f), dim=-1)
    expected = ((image_f @ labels.T).argmax(-1) == truth).float().mean().item()
    assert _accuracy(image_f, text_f, owners, truth, task)[0] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"scoring": "max"}, "scoring must be"),
        ({"margin": -0.1}, "margin must be"),
        ({"margin": float("nan")}, "margin must be"),
        ({"scoring": "any", "prompts": {"ada": ["a"], "bob": ["b", "c"]}}, "same number"),
    ],
    ids=["unknown-scoring", "negative-margin", "nan-margin", "any-needs-aligned-prompts"],
)
def test_bad_criterion_settings_get_a_typed_error(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        _task(**kwargs)


def test_criterion_phrasings_never_overlap_the_audit_templates():
    for kind, phrasings in CRITERION_TEMPLATES.items():
        assert not set(phrasings) & set(audit_templates(kind)), kind
        assert all(t.count("{}") == 1 for t in phrasings)


def test_user_templates_join_the_built_in_ones_and_need_a_slot():
    assert criterion_templates("style", ("drawn as {}.",))[-1] == "drawn as {}."
    with pytest.raises(ConfigError, match="exactly one"):
        criterion_templates("identity", ("no slot here",))
    with pytest.raises(ConfigError, match="unknown concept kind"):
        criterion_templates("colour")
