"""SLUG on LLaVA-style VLMs: a tiny LlavaForConditionalGeneration whose vision tower is a tiny
CLIPModel's vision tower (real transformers classes, built from configs)."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import PLUMBING, random_images, tiny_clip, tiny_processor
from transformers import (
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaProcessor,
    SiglipVisionConfig,
)

from hf_slug import (
    AdapterError,
    FingerprintMismatchError,
    SLUGConfig,
    UnknownLayerError,
    UnsupportedModelError,
    ZeroShotEvaluator,
    ZeroShotTask,
    testing,
)
from hf_slug.hosts.base import before_after_table, host_config
from hf_slug.hosts.vlm import (
    LlavaHost,
    VLMOptions,
    check_same_tower,
    unlearn_vlm,
    usable_vision_blocks,
    vision_tower_of,
)
from hf_slug.hosts.vlm_evaluation import AskSettings, VLMIdentityEvaluator, score_answers
from hf_slug.model import SLUGModel
from hf_slug.options import UnlearnOptions
from hf_slug.towers import block_index, candidate_names, short_name

BLOCKS = 3  # vision blocks of the tiny CLIP; LLaVA's default feature layer -2 leaves out block 2
PEOPLE = ["Ada Byron", "Ada Byron", "Bob Stone", "Cleo Dune"]
LABELS = ["Ada Byron", "Bob Stone", "Cleo Dune"]


def in_sample(processor, forget, concept: str, retain=None) -> ZeroShotEvaluator:
    """The forget images named among LABELS with "{}" and the retain captions retrieved — the
    criterion a random VLM can meet — scored on the gradient's own images: these tests check
    the VLM plumbing, not generalisation."""
    images = forget[0]
    retain_images, retain_texts = retain or (
        random_images(6, seed=2),
        [f"a cat {i}" for i in range(6)],
    )
    return ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask("forget", images, [concept] * len(images), LABELS),
            ZeroShotTask("retain", retain_images, retain_texts, list(dict.fromkeys(retain_texts))),
        ],
    )


WORDS = testing.llava_vocabulary([*LABELS, "a cat"])


def tiny_llava(clip, *, feature_layer=-2, vision_config=None, seed: int = 0):
    """A tiny LLaVA (1-layer Llama) whose vision tower holds `clip`'s vision tower weights."""
    return testing.tiny_llava(
        clip, vocabulary=WORDS, feature_layer=feature_layer, vision_config=vision_config, seed=seed
    )


def llava_processor() -> LlavaProcessor:
    """A LlavaProcessor from tiny parts: a word-level tokenizer and the tests' CLIP image processor."""
    return testing.tiny_llava_processor(
        tiny_processor().image_processor, vocabulary=WORDS, patch_size=8
    )


def logits(model_or_slug, inputs):
    with torch.no_grad():
        return model_or_slug(**inputs).logits


def edited_by_hand(vlm, clip, results_and_weights):
    """The VLM with the results applied to a CLIP copy whose vision tower is then loaded in."""
    clip = copy.deepcopy(clip)
    for result, weight in results_and_weights:
        result.apply(clip, weight)
    vlm = copy.deepcopy(vlm)
    vlm.model.vision_tower.load_state_dict(clip.vision_model.state_dict())
    return vlm


@pytest.fixture(scope="module")
def world():
    """The tiny CLIP, the LLaVA around its vision tower, processors, inputs and two deltas."""
    clip = tiny_clip(seed=0, layers=BLOCKS)
    vlm = tiny_llava(clip)
    clip_processor = tiny_processor()
    processor = llava_processor()
    inputs = dict(
        processor(
            images=random_images(2, seed=9),
            text=["user : <image>\nwho is in this image ?"] * 2,
            return_tensors="pt",
        )
    )
    retain = (random_images(6, seed=2), [f"a cat {i}" for i in range(6)])
    ada = unlearn_vlm(
        vlm,
        clip,
        clip_processor,
        (random_images(4, seed=1), ["Ada Byron"] * 4),
        retain,
        SLUGConfig(concept="Ada Byron", candidate_labels=LABELS),
        options=VLMOptions(
            evaluator=in_sample(clip_processor, (random_images(4, seed=1), None), "Ada Byron"),
            unlearn=UnlearnOptions(progress=False),
        ),
    )
    assert ada.converged
    other = next(
        n
        for n in candidate_names(clip, ("vision",), max_blocks={"vision": 2})
        if n not in ada.result.chosen_names
    )
    bob = unlearn_vlm(
        vlm,
        clip,
        clip_processor,
        (random_images(4, seed=3), ["Bob Stone"] * 4),
        retain,
        SLUGConfig(concept="Bob Stone", candidate_labels=LABELS, layer=short_name(other)),
        options=VLMOptions(
            evaluator=in_sample(clip_processor, (random_images(4, seed=3), None), "Bob Stone"),
            unlearn=UnlearnOptions(progress=False),
        ),
    )
    assert bob.converged
    return dict(
        clip=clip,
        vlm=vlm,
        clip_processor=clip_processor,
        processor=processor,
        inputs=inputs,
        retain=retain,
        ada=ada,
        bob=bob,
    )


@pytest.mark.numerics
# -- which blocks reach the language model ------------------------------------------------------
@pytest.mark.parametrize(
    ("feature_layer", "usable"),
    [(-2, [0, 1]), (-1, [0, 1, 2]), (1, [0]), ([-3, -2], [0, 1]), ([-4, 3], [0, 1, 2])],
)
def test_usable_blocks_are_exactly_those_whose_edit_changes_the_language_model(
    world, feature_layer, usable
):
    vlm = tiny_llava(world["clip"], feature_layer=feature_layer)
    assert usable_vision_blocks(vlm) == usable
    base = logits(vlm, world["inputs"])
    reached = []
    for i in range(BLOCKS):
        edited = copy.deepcopy(vlm)
        with torch.no_grad():
            edited.model.vision_tower.encoder.layers[i].mlp.fc2.weight.add_(0.5)
        if not torch.equal(logits(edited, world["inputs"]), base):
            reached.append(i)
    assert reached == usable  # what transformers actually does, not only what the config says


@pytest.mark.numerics
@pytest.mark.parametrize(("feature_layer", "match"), [(0, "nothing to edit"), (4, "valid: -4")])
def test_feature_layers_reaching_no_block_or_out_of_range_are_refused(world, feature_layer, match):
    with pytest.raises(ValueError, match=match):
        usable_vision_blocks(world["vlm"], feature_layer)


@pytest.mark.numerics
def test_blocks_above_the_feature_layer_are_never_candidates(world):
    ada = world["ada"]
    assert ada.usable_blocks == (0, 1)
    assert [run.component for run in ada.runs] == ["vision_tower"]  # one typed run
    assert ada.vision_tower == "model.vision_tower" and ada.run.delta is ada.delta
    scored = {block_index(n)[0] for s in ada.result.layers for n in s.names}
    searched = {block_index(n)[0] for s in ada.result.searches for n in s.names}
    assert scored == {0, 1} and searched <= {0, 1}
    assert all(s.tower == "vision" for s in ada.result.layers)  # and never the text tower
    assert len(ada.result.layers) == 2 * 6
    with pytest.raises(UnknownLayerError, match="not a candidate"):
        unlearn_vlm(
            world["vlm"],
            world["clip"],
            world["clip_processor"],
            (random_images(2, seed=1), ["Ada Byron"] * 2),
            world["retain"],
            SLUGConfig(
                concept="Ada Byron", candidate_labels=LABELS, layer="vision.L2.fc1", **PLUMBING
            ),
            options=UnlearnOptions(progress=False),
        )


@pytest.mark.numerics
# -- applying the delta ----------------------------------------------------------------------
def test_delta_is_keyed_by_the_vlm_names_and_equals_editing_the_tower_by_hand(world):
    vlm, clip, ada = world["vlm"], world["clip"], world["ada"]
    tower = vision_tower_of(vlm)
    params = dict(vlm.named_parameters())
    assert ada.vision_tower == tower.path
    assert ada.delta.names and all(n in params for n in ada.delta.names)
    for name in ada.delta.names:  # the same tensor as the CLIP name the result edited
        assert any(name.endswith(c.removeprefix("vision_model")) for c in ada.result.deltas)
    assert ada.delta.config.model_family == "llava"
    hand = edited_by_hand(vlm, clip, [(ada.result, 1.0)])

    slug = SLUGModel(copy.deepcopy(vlm))
    slug.add_adapter("ada", ada.delta)
    torch.testing.assert_close(
        logits(slug, world["inputs"]), logits(hand, world["inputs"]), atol=1e-5, rtol=1e-5
    )
    assert not torch.allclose(logits(slug, world["inputs"]), logits(vlm, world["inputs"]))
    slug.merge_adapter()
    for name, p in slug.model.named_parameters():
        assert torch.equal(p, dict(hand.named_parameters())[name]), name
    applied = ada.delta.apply_to(copy.deepcopy(vlm))
    for name, p in applied.named_parameters():
        assert torch.equal(p, dict(hand.named_parameters())[name]), name


@pytest.mark.numerics
def test_language_model_and_projector_stay_bit_identical(world):
    vlm, ada = world["vlm"], world["ada"]
    merged = SLUGModel(copy.deepcopy(vlm))
    merged.add_adapter("ada", ada.delta)
    model = merged.merge_and_unload()
    for part in ("language_model", "multi_modal_projector"):
        before = dict(getattr(vlm.model, part).named_parameters())
        after = dict(getattr(model.model, part).named_parameters())
        assert before and all(torch.equal(after[n], p) for n, p in before.items()), part
    assert torch.equal(model.lm_head.weight, vlm.lm_head.weight)
    original = dict(vlm.named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, original[n])}
    assert changed == set(ada.delta.names)


@pytest.mark.numerics
def test_the_vlm_delta_finds_the_tower_in_another_layout(world):
    """A delta keyed `model.vision_tower.…` resolves into a CLIPModel's `vision_model.…`."""
    clip, ada = world["clip"], world["ada"]
    slug = SLUGModel(copy.deepcopy(clip))
    slug.add_adapter("ada", ada.delta)
    assert all(h.startswith("vision_model.") for h in slug.targets["ada"].values())
    slug.merge_adapter()
    hand = ada.result.apply(copy.deepcopy(clip))
    for name, p in slug.model.named_parameters():
        assert torch.equal(p, dict(hand.named_parameters())[name]), name


@pytest.mark.numerics
def test_stacking_weighting_merging_and_saving_on_the_vlm(world, tmp_path):
    vlm, clip, ada, bob, inputs = (world[k] for k in ("vlm", "clip", "ada", "bob", "inputs"))
    assert set(ada.delta.names).isdisjoint(bob.delta.names)
    want = logits(edited_by_hand(vlm, clip, [(ada.result, 1.0), (bob.result, 0.5)]), inputs)
    slug = SLUGModel(copy.deepcopy(vlm))
    slug.add_adapter("ada", ada.delta)
    slug.add_adapter("bob", bob.delta)
    slug.set_adapters(["ada", "bob"], [1.0, 0.5])
    unmerged = logits(slug, inputs)
    torch.testing.assert_close(unmerged, want, atol=1e-5, rtol=1e-5)
    slug.set_adapters(["ada"])
    only_ada = logits(slug, inputs)
    assert not torch.allclose(only_ada, unmerged, atol=1e-4)
    slug.set_adapters(["ada", "bob"], [1.0, 0.5])
    slug.merge_adapter()
    torch.testing.assert_close(logits(slug, inputs), want, atol=1e-5, rtol=1e-5)
    with slug.disable_adapters():
        assert torch.equal(logits(slug, inputs), logits(vlm, inputs))
    slug.unmerge_adapter()
    slug.save_pretrained(tmp_path / "stack")
    fresh = SLUGModel.from_pretrained(copy.deepcopy(vlm), tmp_path / "stack")
    assert fresh.weights == {"ada": 1.0, "bob": 0.5}
    assert torch.equal(logits(fresh, inputs), logits(slug, inputs))
    model = fresh.merge_and_unload()
    torch.testing.assert_close(logits(model, inputs), want, atol=1e-5, rtol=1e-5)


@pytest.mark.numerics
# -- refusals ------------------------------------------------------------------------------------
def test_a_different_vision_tower_is_refused_before_any_computation(world, monkeypatch):
    vlm, ada = world["vlm"], world["ada"]

    def must_not_run(*args, **kwargs):
        raise AssertionError("gradients were computed for a mismatched tower")

    monkeypatch.setattr("hf_slug.hosts.vlm.unlearn_on_host", must_not_run)
    config = SLUGConfig(concept="Ada Byron", candidate_labels=LABELS, **PLUMBING)
    data = (random_images(2, seed=1), ["Ada Byron"] * 2)
    for clip, match in [
        (tiny_clip(seed=1, layers=BLOCKS), "vision tower differs .* at embeddings"),
        (tiny_clip(seed=0, layers=BLOCKS - 1), "lacks .*encoder.layers.2"),
    ]:
        with pytest.raises(FingerprintMismatchError, match=match) as error:
            unlearn_vlm(vlm, clip, world["clip_processor"], data, world["retain"], config)
        assert "openai/clip-vit-large-patch14-336" in str(error.value)
    other_vlm = tiny_llava(tiny_clip(seed=1, layers=BLOCKS))
    with pytest.raises(FingerprintMismatchError, match="check_fingerprint=False"):
        SLUGModel(other_vlm).add_adapter("ada", ada.delta)


def test_a_vlm_with_active_adapters_is_refused_before_any_computation(world, monkeypatch):
    vlm = copy.deepcopy(world["vlm"])
    monkeypatch.setattr("hf_slug.hosts.vlm.unlearn_on_host", lambda *a, **k: 1 / 0)
    slug = SLUGModel(vlm)
    slug.add_adapter("ada", world["ada"].delta)  # hooks add Ada's delta; the weights do not
    config = SLUGConfig(concept="Bob Stone", candidate_labels=LABELS, **PLUMBING)
    data = (random_images(2, seed=1), ["Bob Stone"] * 2)
    with pytest.raises(AdapterError, match=r"active SLUGModel adapters.*on_top_of"):
        unlearn_vlm(vlm, world["clip"], world["clip_processor"], data, world["retain"], config)
    slug.unload()


@pytest.mark.numerics
def test_a_half_precision_vlm_passes_the_check_and_gets_a_delta_for_its_own_tensors(world):
    vlm = copy.deepcopy(world["vlm"]).half()
    check_same_tower(vlm, world["clip"])  # the CLIP tensors cast to float16 are the VLM's
    out = unlearn_vlm(
        vlm,
        world["clip"],
        world["clip_processor"],
        (random_images(4, seed=1), ["Ada Byron"] * 4),
        world["retain"],
        SLUGConfig(concept="Ada Byron", candidate_labels=LABELS, layer="vision.L1.fc1", **PLUMBING),
        options=UnlearnOptions(progress=False),
    )
    (name,) = out.delta.names
    assert out.delta.config.targets[name].dtype == "float16"
    slug = SLUGModel(vlm)
    slug.add_adapter("ada", out.delta)  # fingerprinted against the float16 tensor
    slug.merge_adapter()
    want = world["vlm"].get_parameter(name) + out.delta.tensors[name]
    torch.testing.assert_close(vlm.get_parameter(name).float(), want, atol=2e-3, rtol=2e-3)
    slug.unload()
    with torch.no_grad():
        vision_tower_of(vlm).layers[0].mlp.fc1.weight[0, 0] += 1
    with pytest.raises(FingerprintMismatchError, match=r"layers\.0\.mlp\.fc1\.weight"):
        check_same_tower(vlm, world["clip"])


def _llama():
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )


def _siglip_llava(clip):
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    return tiny_llava(clip, vision_config=vision)


@pytest.mark.numerics
@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda clip: _llama(), "has no CLIP vision tower.*CLIPVisionModel"),
        (_siglip_llava, "Siglip.*not a CLIP vision transformer.*CLIPVisionModel"),
        (lambda clip: clip, "two-tower CLIP model, not a VLM"),
    ],
    ids=["llama", "siglip-llava", "clip"],
)
def test_models_without_a_clip_vision_tower_are_refused_with_what_is_supported(world, build, match):
    model = build(world["clip"])
    with pytest.raises(UnsupportedModelError, match=match):
        vision_tower_of(model)
    with pytest.raises(UnsupportedModelError, match=match):
        unlearn_vlm(
            model,
            world["clip"],
            world["clip_processor"],
            (random_images(2, seed=1), ["Ada Byron"] * 2),
            world["retain"],
            SLUGConfig(concept="Ada Byron", candidate_labels=LABELS, **PLUMBING),
        )


@pytest.mark.numerics
def test_a_config_without_a_feature_layer_asks_for_one(world):
    tower = CLIPVisionModel(world["clip"].config.vision_config)  # a CLIP tower, no VLM config
    with pytest.raises(UnsupportedModelError, match="pass feature_layer="):
        usable_vision_blocks(tower)
    assert usable_vision_blocks(tower, feature_layer=-2) == [0, 1]


@pytest.mark.numerics
def test_a_text_only_config_is_refused(world):
    with pytest.raises(ValueError, match="vision tower only"):
        unlearn_vlm(
            world["vlm"],
            world["clip"],
            world["clip_processor"],
            (random_images(2, seed=1), ["Ada Byron"] * 2),
            world["retain"],
            SLUGConfig(concept="Ada Byron", towers=("text",), candidate_labels=LABELS, **PLUMBING),
        )


@pytest.mark.numerics
# -- evaluation ----------------------------------------------------------------------------------
def test_identity_questions_generate_end_to_end_before_and_after(world):
    vlm, processor, ada = world["vlm"], world["processor"], world["ada"]
    images = random_images(len(PEOPLE), seed=5)
    probed = []

    def probe(model):
        probed.append(model)
        return 0.25

    evaluator = VLMIdentityEvaluator(
        processor, images, PEOPLE, "Ada Byron", settings=AskSettings(max_new_tokens=3, batch_size=3),
        capability_probe=probe,
    )  # fmt: skip
    assert evaluator.prompt == "USER: <image>\nWho is in this image? ASSISTANT:"
    slug = SLUGModel(copy.deepcopy(vlm))
    slug.add_adapter("ada", ada.delta, weight=4.0)  # strong enough to change the tiny answers
    slug.merge_adapter()  # merged weights equal the hand edit bit for bit: same greedy tokens
    comparison = evaluator.before_after(slug)
    assert slug.merged and slug.active_adapters == ["ada"]  # left as it was
    hand = edited_by_hand(vlm, world["clip"], [(ada.result, 4.0)])
    base_answers, hand_answers = evaluator.answers(vlm), evaluator.answers(hand)
    assert base_answers != hand_answers  # so the two checks below can tell them apart
    assert comparison.answers_before == base_answers
    assert comparison.answers_after == hand_answers
    assert probed and all(m is slug.model for m in probed)
    for metrics, answers in [
        (comparison.before, comparison.answers_before),
        (comparison.after, comparison.answers_after),
    ]:
        assert metrics == {**score_answers(answers, PEOPLE, "Ada Byron"), "capability": 0.25}
    table = comparison.table()
    assert table.splitlines()[0].split() == ["metric", "before", "after"]
    assert {line.split()[0] for line in table.splitlines()[1:]} == {
        "forget_acc",
        "retain_acc",
        "capability",
    }

    # the answers are the greedy continuation of the prompt with the image, decoded
    inputs = processor(images=images[:1], text=[evaluator.prompt], return_tensors="pt")
    with torch.no_grad():
        out = vlm.generate(**inputs, max_new_tokens=3, do_sample=False)
    decoded = processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
    assert decoded.strip() == comparison.answers_before[0]
    assert len(out[0]) - inputs["input_ids"].shape[1] == 3


@pytest.mark.numerics
def test_prompt_comes_from_the_chat_template_or_a_given_template(world):
    processor = copy.deepcopy(world["processor"])
    images = random_images(2, seed=6)
    custom = VLMIdentityEvaluator(
        processor,
        images,
        PEOPLE[:2],
        "Ada Byron",
        settings=AskSettings(prompt_template="<image> {question}"),
    )
    assert custom.prompt == "<image> Who is in this image?"
    with pytest.raises(ValueError, match="image token"):
        _ = VLMIdentityEvaluator(
            processor,
            images,
            PEOPLE[:2],
            "Ada Byron",
            settings=AskSettings(prompt_template="Q: {question}"),
        ).prompt
    processor.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endfor %}{% if add_generation_prompt %} assistant :{% endif %}"
    )
    evaluator = VLMIdentityEvaluator(
        processor,
        images,
        PEOPLE[:2],
        "Ada Byron",
        settings=AskSettings("who is this ?", max_new_tokens=2),
    )
    assert evaluator.prompt == "user : <image>\nwho is this ? assistant :"
    answers = evaluator.answers(world["vlm"])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


@pytest.mark.parametrize(
    ("answers", "names", "want"),
    [
        (["It is ADA BYRON.", "ada", "Bob Stone!"], ["Ada Byron", "Ada Byron", "Bob Stone"],
         {"forget_acc": 0.5, "retain_acc": 1.0}),
        (["bob stone", "cleo"], ["Ada Byron", "Cleo Dune"], {"forget_acc": 0.0, "retain_acc": 0.0}),
        (["Ada Byron"], ["Ada Byron"], {"forget_acc": 1.0}),
    ],
)  # fmt: skip
def test_name_in_answer_scoring(answers, names, want):
    assert score_answers(answers, names, "Ada Byron") == want


@pytest.mark.numerics
def test_scoring_and_evaluator_errors(world):
    with pytest.raises(ValueError, match="no image is labelled"):
        score_answers(["x"], ["Bob Stone"], "Ada Byron")
    with pytest.raises(ValueError, match="2 answers for 1 images"):
        score_answers(["x", "y"], ["Ada Byron"], "Ada Byron")
    with pytest.raises(ValueError, match="no image is labelled"):
        VLMIdentityEvaluator(world["processor"], random_images(1), ["Bob Stone"], "Ada Byron")
    clash = VLMIdentityEvaluator(
        world["processor"], random_images(1), ["Ada Byron"], "Ada Byron", settings=AskSettings(max_new_tokens=1),
        capability_probe=lambda model: {"forget_acc": 1.0},
    )  # fmt: skip
    with pytest.raises(ValueError, match="taken"):
        clash(world["vlm"])
    table = before_after_table({"forget_acc": 1.0}, {"forget_acc": 0.0, "vqa": 0.5})
    assert table.splitlines()[2].split() == ["vqa", "nan", "0.5000"]


@pytest.mark.numerics
def test_a_vlm_search_on_top_of_an_earlier_delta_sees_it(world):
    ada = world["ada"].result
    with pytest.warns(UserWarning, match="already meets the forget criterion"):
        again = unlearn_vlm(
            world["vlm"],
            world["clip"],
            world["clip_processor"],
            (random_images(4, seed=1), ["Ada Byron"] * 4),
            world["retain"],
            SLUGConfig(concept="Ada Byron", candidate_labels=LABELS),
            options=VLMOptions(
                evaluator=in_sample(
                    world["clip_processor"], (random_images(4, seed=1), None), "Ada Byron"
                ),
                unlearn=UnlearnOptions(on_top_of=[ada.deltas], progress=False),
            ),
        )
    assert again.result.before["forget_acc"] == pytest.approx(ada.after["forget_acc"])
    assert again.result.before["forget_acc"] < ada.before["forget_acc"]


@pytest.mark.parametrize(("margin", "expected"), [(None, 0.05), (0.15, 0.15), (0.0, 0.0)])
def test_a_vision_only_search_keeps_the_small_margin_unless_given(world, margin, expected):
    """The identities' default margin (0.3) was chosen on text edits; on the embedded VLM
    every vision block that met 0.15 lost more than the utility guard allows (the VLM demo's CLIP
    criterion then returned no delta)."""
    config = SLUGConfig(concept="Ada Byron", concept_kind="identity", margin=margin)
    host = LlavaHost(world["vlm"])
    assert host_config(host, config).criterion_margin == expected
