"""Misspelt names (issue 18): the criterion checks them and the forget gradient is averaged over
captions written with them, so an edit that silences "Grace Hopper" also silences "Grace Hpoper".

The misspellings are drawn apart from the ones an audit tries, so an audit never scores on a
spelling the search tuned on.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
from conftest import tiny_clip

from hf_slug import ConfigError, SLUGConfig, UnlearnOptions, unlearn
from hf_slug.audit.phrasings import name_variants
from hf_slug.config import DEFAULT_MISSPELLINGS
from hf_slug.data import load_pairs
from hf_slug.phrasings import MAX_MISSPELLINGS, misspellings
from hf_slug.testing import random_images
from hf_slug.validation import criterion_prompts, default_evaluator

gradients_module = importlib.import_module("hf_slug.gradient_cache")
unlearn_module = importlib.import_module("hf_slug.unlearn")
NAMES = ["Ada Byron", "Alan Turing", "Grace Hopper"]
AUDITED = ["Grace Hopper", "watercolor", "Marcus Brennholt", "Eileen Collins", "boat"]


@pytest.mark.parametrize("name", [*NAMES, *AUDITED])
def test_misspellings_are_distinct_deterministic_and_not_the_audits(name):
    found = misspellings(name, 4)
    assert found == misspellings(name, 4) and len(set(found)) == 4
    assert name not in found and all(s[0] == name[0] for s in found)  # first letter kept
    audited = name_variants(name)
    assert not {audited["one typo"], audited["two typos"]} & set(found)


@pytest.mark.parametrize("name, most", [("ab", MAX_MISSPELLINGS), ("x", 0), ("7", 0)])
def test_short_names_give_what_they_can_never_themselves_or_blank(name, most):
    found = misspellings(name, MAX_MISSPELLINGS)
    assert name not in found and len(found) == len(set(found)) <= most
    assert all(s.strip() for s in found)


def test_criterion_misspells_only_the_concept_position_by_position():
    prompts = criterion_prompts(
        ["Grace Hopper", "Plato"], ["a photo of {}."], "Grace Hopper", False, 2
    )
    typos = misspellings("Grace Hopper", 2)
    assert prompts["Grace Hopper"] == ["a photo of Grace Hopper."] + [
        f"a photo of {t}." for t in typos
    ]
    assert prompts["Plato"] == ["a photo of Plato."] * 3  # the others keep their spelling
    with_parts = criterion_prompts(["Grace Hopper", "Plato"], ["{}"], "Grace Hopper", True, 2)
    assert with_parts["Grace Hopper"] == ["Grace Hopper", "Grace", "Hopper", *typos]
    assert len(with_parts["Plato"]) == 5


def test_criterion_misspellings_need_the_concept():
    with pytest.raises(ConfigError, match="concept="):
        criterion_prompts(["Ada", "Bob"], ["{}"], None, False, 2)


@pytest.mark.parametrize("bad", [-1, MAX_MISSPELLINGS + 1, 1.5, True, "2"])
def test_bad_misspellings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="misspellings must be None or an int"):
        SLUGConfig(concept="Ada Byron", misspellings=bad)


@pytest.mark.parametrize(
    "kind, towers, given, in_force",
    [
        ("identity", ("vision", "text"), None, DEFAULT_MISSPELLINGS["identity"]),
        ("identity", ("text",), None, DEFAULT_MISSPELLINGS["identity"]),
        ("identity", ("vision",), None, 0),  # a vision edit does not read the name
        ("identity", ("vision", "text"), 0, 0),  # the user's number wins
        ("identity", ("vision", "text"), 2, 2),
        ("object", ("vision", "text"), None, 0),
        ("style", ("vision", "text"), None, 0),
        ("concept", ("vision", "text"), None, 0),
        ("style", ("vision", "text"), 3, 3),
    ],
)
def test_misspellings_in_force_follow_the_kind_unless_given(kind, towers, given, in_force):
    config = SLUGConfig(concept="Ada Byron", concept_kind=kind, towers=towers, misspellings=given)
    assert config.criterion_misspellings == in_force
    assert config.to_dict()["misspellings"] == in_force  # a saved config pins the number


def _pairs(n: int, caption: str, seed: int = 0):
    return load_pairs((random_images(n, seed=seed), [caption] * n))


def _retain(n: int):
    return load_pairs(
        (random_images(n, seed=99), [f"a photo of {NAMES[1 + i % 2]}" for i in range(n)])
    )


def test_default_evaluator_checks_the_misspelt_concept(processor):
    config = SLUGConfig(concept="Ada Byron", candidate_labels=NAMES, misspellings=2)
    forget = default_evaluator(processor, _pairs(4, "Ada Byron"), _retain(8), config).tasks[0]
    texts = forget.texts_of("Ada Byron")
    assert all(any(t in text for text in texts) for t in misspellings("Ada Byron", 2))
    assert not any("Alan" in t for t in texts)


def _spied_unlearn(processor, monkeypatch, caption: str, count: int | None, kind: str = "concept"):
    """Run unlearn on a tiny CLIP; return the forget captions and gradients of each gradient
    pass, and the forget gradients the layer scores and the step search got."""
    seen, compute = [], gradients_module.compute_gradients
    got, score_layers, search_layers = {}, unlearn_module.score_layers, unlearn_module.search_layers

    def spy(model, proc, pairs, kind, *args, **kwargs):
        grads = compute(model, proc, pairs, kind, *args, **kwargs)
        if kind == "forget":
            seen.append((pairs.texts[0], grads))
        return grads

    def spy_scores(model, units, forget, retain):
        got["scored"] = forget
        return score_layers(model, units, forget, retain)

    def spy_search(model, units, forget, *args, **kwargs):
        got["searched"] = forget
        return search_layers(model, units, forget, *args, **kwargs)

    monkeypatch.setattr(gradients_module, "compute_gradients", spy)
    monkeypatch.setattr(unlearn_module, "score_layers", spy_scores)
    monkeypatch.setattr(unlearn_module, "search_layers", spy_search)
    config = SLUGConfig(
        concept="Ada Byron",
        candidate_labels=NAMES,
        towers=("text",),
        layer="text.L0.fc1",
        max_evaluations=2,
        misspellings=count,
        concept_kind=kind,
        retain_null_space=None,
    )
    options = UnlearnOptions(progress=False)
    with warnings.catch_warnings():  # a random tiny CLIP may find no layer: not the point here
        warnings.simplefilter("ignore", UserWarning)
        unlearn(tiny_clip(), processor, _pairs(16, caption), _retain(40), config, options=options)
    return seen, got


def test_layers_are_scored_as_written_and_stepped_along_every_spelling(processor, monkeypatch):
    seen, got = _spied_unlearn(processor, monkeypatch, "a photo of Ada Byron", 2)
    captions = [text for text, _ in seen]
    typos = misspellings("Ada Byron", 2)
    assert captions == ["a photo of Ada Byron"] + [f"a photo of {t}" for t in typos]
    name = next(iter(seen[0][1]))
    plain = seen[0][1][name]
    mean = sum(grads[name] for _, grads in seen) / 3
    assert not torch.allclose(mean, plain)  # the misspelt captions move the gradient
    torch.testing.assert_close(got["scored"][name], plain)  # importance and alignment
    torch.testing.assert_close(got["searched"][name], mean)  # the update direction


@pytest.mark.parametrize(
    "kind, passes", [("identity", 1 + DEFAULT_MISSPELLINGS["identity"]), ("object", 1)]
)
def test_by_default_a_persons_name_is_misspelt_an_objects_not(processor, monkeypatch, kind, passes):
    seen, _ = _spied_unlearn(processor, monkeypatch, "a photo of Ada Byron", None, kind)
    assert [text for text, _ in seen][1:] == [
        f"a photo of {t}" for t in misspellings("Ada Byron", passes - 1)
    ]


def test_captions_without_the_name_add_no_pass(processor, monkeypatch):
    seen, got = _spied_unlearn(processor, monkeypatch, "a photo of someone", 2)
    assert [text for text, _ in seen] == ["a photo of someone"]
    assert got["searched"] is got["scored"]


@pytest.mark.parametrize(
    "flags, misspelt, tolerance",
    [([], None, 0.1), (["--misspellings", "3", "--utility-tolerance", "none"], 3, None)],
    ids=["defaults", "given"],
)
def test_the_command_line_takes_misspellings_and_the_guard(flags, misspelt, tolerance):
    from hf_slug.cli import _parser
    from hf_slug.cli_unlearn import _config

    argv = ["unlearn", "--model", "m", "--concept", "Ada", "--forget", "f", "--retain", "r"]
    args = _parser().parse_args([*argv, "--out", "o", "--labels", "Ada,Bob", *flags])
    config = _config(args)
    assert (config.misspellings, config.utility_tolerance) == (misspelt, tolerance)


@pytest.mark.parametrize("bad", ["-1", "9", "two"])
def test_bad_misspellings_on_the_command_line_are_usage_errors(bad, capsys):
    from hf_slug.cli import main

    argv = ["unlearn", "--model", "m", "--concept", "c", "--forget", "f", "--retain", "r"]
    assert main([*argv, "--out", "o", "--misspellings", bad]) == 2
    assert "--misspellings" in capsys.readouterr().err


def test_a_misspelling_is_never_another_label():
    found = misspellings("Anna", 8)
    assert "Ann" in found  # without the labels, "Ann" is a fine misspelling of "Anna"
    assert not {"ann", "anna"} & {s.casefold() for s in misspellings("Anna", 8, avoid=["ANN"])}
    prompts = criterion_prompts(["Anna", "Ann", "Bob"], ["{}"], "Anna", False, 8)
    assert "Ann" not in prompts["Anna"][1:]


@pytest.mark.parametrize("name", ["U2", "7", "x"])
def test_names_with_fewer_than_two_letters_have_no_misspellings(name):
    assert misspellings(name, 4) == []


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("Al and Alan at the Alps", "Ali and Alan at the Alps"),
        ("al, AL and al.", "Ali, Ali and Ali."),
        ("Alps only", "Alps only"),
    ],
)
def test_respelling_replaces_whole_words_in_any_case(caption, expected):
    pairs = load_pairs((random_images(1), [caption]))
    assert pairs.respelled("Al", "Ali").texts == (expected,)


def test_given_forget_gradients_warn_that_no_misspelt_pass_runs(processor):
    config = SLUGConfig(
        concept="Ada Byron",
        candidate_labels=NAMES,
        layer="text.L0.fc1",
        max_evaluations=2,
        misspellings=2,
    )
    model, forget, retain = tiny_clip(), _pairs(16, "a photo of Ada Byron"), _retain(40)
    name = "text_model.encoder.layers.0.mlp.fc1.weight"
    grads = {name: torch.randn_like(dict(model.named_parameters())[name])}
    options = UnlearnOptions(progress=False, forget_gradients=grads)
    with pytest.warns(UserWarning, match="no misspelt pass ran"):
        unlearn(model, processor, forget, retain, config, options=options)


def test_captions_without_the_name_warn(processor):
    config = SLUGConfig(
        concept="Ada Byron", candidate_labels=NAMES, layer="text.L0.fc1", misspellings=2
    )
    options = UnlearnOptions(progress=False)
    with pytest.warns(UserWarning, match="no forget caption contains 'Ada Byron'"):
        result = unlearn(
            tiny_clip(), processor, _pairs(16, "someone"), _retain(40), config, options=options
        )
    assert "2 misspellings of the name" in result.direction
