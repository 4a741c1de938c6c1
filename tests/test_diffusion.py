"""SLUG on Stable Diffusion pipelines: tiny SD 1.x/2.x- and SDXL-shaped pipelines built from
configs (real diffusers and transformers classes), whose text encoders are tiny CLIPs' towers."""

from __future__ import annotations

import copy
import json
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip, tiny_processor
from diffusion_fixtures import text_encoder_from, tiny_sd_pipeline, tiny_sdxl_pipeline
from PIL import Image
from safetensors import safe_open
from shapes import (
    EVERY_LAYER,
    NAMES,
    TEMPLATE,
    TEST_PER_CLASS,
    UTILITY_TOLERANCE,
    VAL_FORGET,
    VAL_RETAIN,
    assert_forgotten_and_kept,
    assert_same_edit,
    samples,
)

from hf_slug import (
    ConceptDelta,
    ConfigError,
    DeltaFormatError,
    FingerprintMismatchError,
    SLUGConfig,
    UnlearningConfig,
    UnsupportedModelError,
    ZeroShotEvaluator,
    ZeroShotTask,
)
from hf_slug.config import TargetInfo
from hf_slug.hosts.diffusion import (
    PipelineOptions,
    TextEncoder,
    check_text_encoder,
    unlearn_pipeline,
    usable_text_blocks,
)
from hf_slug.hosts.diffusion_export import (
    LORA_WEIGHT_NAME,
    export_diffusers_lora,
    select_components,
)
from hf_slug.hosts.generation import (
    DiffusionEvaluator,
    DiffusionScoring,
    ForgetGeneration,
    GenerationSettings,
    generate_forget_set,
    generate_images,
)
from hf_slug.io import fingerprint
from hf_slug.model import SLUGModel
from hf_slug.options import UnlearnOptions
from hf_slug.towers import encode_images, encode_texts, find_towers, tower_of

STEPS = {"num_inference_steps": 2}
PROMPTS = [TEMPLATE.format(n) for n in NAMES]


# -- helpers ---------------------------------------------------------------------------------------
def prompt_embeds(pipe, prompts=PROMPTS):
    """What the UNet is conditioned on (SDXL: both encoders' states, and the pooled embedding)."""
    with torch.no_grad():
        out = pipe.encode_prompt(
            prompts, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
    if len(out) == 4:  # SDXL: (embeds, negative, pooled, negative pooled)
        return torch.cat([out[0].flatten(1), out[2]], dim=1)
    return out[0].flatten(1)


def edited_by_hand(pipe, delta, weight=1.0):
    """A copy of `pipe` whose text encoder weights were edited directly (copy it before a
    SLUGModel hooks `pipe`: a deep copy keeps forward hooks)."""
    return stacked_by_hand(pipe, [(delta, weight)])


def stacked_by_hand(pipe, deltas_and_weights):
    """A copy of `pipe` whose weights hold base + Σ w·Δ: the weighted deltas summed first (in
    fp32, in the given order), then added once, as a fuse documents it. Two deltas may edit the
    same tensor: adding them one after the other would round differently."""
    edited = copy.deepcopy(pipe)
    params = {
        f"{name}.{k}": v
        for name, module in edited.components.items()
        if isinstance(module, torch.nn.Module)
        for k, v in module.named_parameters()
    }
    total: dict[str, torch.Tensor] = {}
    for delta, weight in deltas_and_weights:
        for key, value in delta.dense().items():
            total[key] = total.get(key, 0) + weight * value
    with torch.no_grad():
        for key, value in total.items():
            params[key].copy_(params[key].float() + value)
    return edited


class TextDrift:
    """A cheap forget metric for untrained tiny CLIPs: the cosine between the concept's text
    embedding and its value at θ⁰ (1.0 before any edit; SLUG's ascent lowers it)."""

    def __init__(self, processor, text):
        self.tokens = processor(text=[text], return_tensors="pt", padding=True)
        self.reference = None

    def __call__(self, model):
        with torch.no_grad():
            embedding = F.normalize(encode_texts(model, **self.tokens), dim=-1)
        if self.reference is None:
            self.reference = embedding
        return {"drift": float((embedding * self.reference).sum()), "utility": 1.0}


def drift_config(concept="zorb", **kwargs):
    return SLUGConfig(
        concept=concept, towers=("text",), forget_metric="drift", forget_target=0.95, **kwargs
    )


def retain_pairs(n=4, seed=5):
    images, labels = samples(1, seed=seed, names=NAMES[1 : 1 + n])
    return images, [TEMPLATE.format(label) for label in labels]


# -- real runs: a tiny CLIP trained on coloured shapes, classes unlearned from its pipeline --------
def shape_run(clip, processor, target, **kwargs):
    others = [n for n in NAMES if n != target]
    forget, _ = samples(8, seed=1, names=[target])
    retain, retain_labels = samples(3, seed=2, names=others)
    val_forget, _ = samples(VAL_FORGET, seed=3, names=[target])
    val_retain, val_labels = samples(VAL_RETAIN, seed=3, names=others)
    evaluator = ZeroShotEvaluator(
        processor,
        [
            ZeroShotTask("forget", val_forget, [target] * len(val_forget), NAMES, (TEMPLATE,)),
            ZeroShotTask("retain", val_retain, val_labels, NAMES, (TEMPLATE,)),
        ],
    )
    return unlearn_pipeline(
        tiny_sd_pipeline(clip),
        clip,
        processor,
        target,
        (retain, [TEMPLATE.format(n) for n in retain_labels]),
        forget=(forget, [TEMPLATE.format(target)] * len(forget)),
        config=SLUGConfig(
            concept=target,
            towers=("text",),
            layer=[n for n in EVERY_LAYER if n.startswith("text.")],
            utility_tolerance=UTILITY_TOLERANCE,
        ),
        options=PipelineOptions(
            evaluator=evaluator,
            concept_kind="object",
            unlearn=UnlearnOptions(progress=False, **kwargs),
        ),
    )


@pytest.fixture(scope="module")
def sd(shapes_clip):
    """The shapes CLIP, its processor and the text-only runs of the first two classes (in
    `NAMES` order) whose search converges.

    A pipeline edits only the text tower, and a tiny text tower cannot always move one class's
    prompt away from every validation image without dragging the others along: then no layer
    meets the criterion within the utility guard, a legitimate outcome that depends on the
    trained model (every text layer is searched; some classes still fail in some models). The
    fixture takes the classes text-only SLUG can forget in this model and fails loudly if fewer
    than two can.
    """
    clip, processor = shapes_clip
    runs, failed = {}, []
    for target in NAMES:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="SLUG found no layer")
            out = shape_run(clip, processor, target)
        if out.converged:
            runs[target] = out
        else:
            failed.append(out.report())
        if len(runs) == 2:
            return clip, processor, runs
    raise AssertionError(f"text-only SLUG forgot {list(runs)} only: {failed}")


@pytest.mark.numerics
def test_pipeline_delta_carries_the_clip_edit_and_moves_the_target_most(sd):
    clip, processor, runs = sd
    first = next(iter(runs))
    out = runs[first]
    assert out.result.after["forget_acc"] == 0.0  # the criterion, met on validation images
    assert out.result.after["utility"] >= out.result.before["utility"] - UTILITY_TOLERANCE
    delta = out.delta
    assert delta.config.model_family == "stable_diffusion"
    assert delta.config.component == "text_encoder"
    # transformers 5.x: a pipeline's CLIPTextModel has no `text_model.` level
    assert all(k.startswith("text_encoder.encoder.layers.") for k in delta.names), delta.names
    pipe = tiny_sd_pipeline(clip)
    tokens = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        before = pipe.text_encoder(tokens.input_ids).pooler_output
    slug = SLUGModel(pipe)
    slug.add_adapter(first, delta)  # checks every target's sha256 against the pipeline
    edited_clip = out.result.apply(copy.deepcopy(clip))
    with torch.no_grad():
        after = pipe.text_encoder(tokens.input_ids).pooler_output
        want = edited_clip.text_model(tokens.input_ids).pooler_output
    assert_same_edit(after, want, before)  # the CLIP edit, verbatim
    # zero-shot through the pipeline's edited encoder: the target forgotten, the others kept
    # (the target moves most where it counts: a text edit may move another class's prompt
    # further in cosine, but that class keeps its images while the target loses its own)
    images, labels = samples(TEST_PER_CLASS, seed=9)
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        image_f = F.normalize(encode_images(clip, pixels), dim=-1)
        own = torch.tensor([NAMES.index(y) for y in labels])

    def similarity(pooled):  # each image's cosine to every class prompt
        with torch.no_grad():
            return image_f @ F.normalize(clip.text_projection(pooled), dim=-1).T

    def hits(sim):
        guess = sim.argmax(-1)
        return {n: float((guess[own == i] == i).float().mean()) for i, n in enumerate(NAMES)}

    assert_forgotten_and_kept(hits(similarity(before)), hits(similarity(after)), [first])


@pytest.mark.numerics
@pytest.mark.parametrize("second", ["another_class", "same_tensors"])
def test_stack_weights_disable_fuse_unfuse_on_a_pipeline(sd, second):
    clip, _, runs = sd
    pipe = tiny_sd_pipeline(clip)
    first, another = (run.delta for run in runs.values())
    if second == "another_class":  # its search may or may not have picked first's tensors
        other = another
    else:  # a delta on exactly first's tensors: fusing must sum before adding
        other = low_rank_delta(pipe, {n.removeprefix("text_encoder."): 2 for n in first.names})
    base_weights = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    base = prompt_embeds(pipe)
    hand = stacked_by_hand(pipe, [(first, 1.0), (other, 0.5)])
    only_first = prompt_embeds(edited_by_hand(pipe, first))  # copies made before any hook exists
    slug = SLUGModel(pipe)
    slug.add_adapter("first", first)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # both may edit the same tensor: their deltas add up
        slug.add_adapter("other", other)
    slug.set_adapters(["first", "other"], adapter_weights=[1.0, 0.5])
    want = prompt_embeds(hand)
    assert_same_edit(prompt_embeds(pipe), want, base)
    with slug.disable_adapters():
        assert torch.equal(prompt_embeds(pipe), base)
    slug.fuse()  # the weights now hold base + Σ w·Δ, exactly as by hand
    for key, value in hand.text_encoder.state_dict().items():
        assert torch.equal(pipe.text_encoder.state_dict()[key], value), key
    assert torch.equal(prompt_embeds(pipe), want)
    slug.unfuse()  # bit for bit the original weights again
    for key, value in base_weights.items():
        assert torch.equal(pipe.text_encoder.state_dict()[key], value), key
    slug.delete_adapter("other")
    assert_same_edit(prompt_embeds(pipe), only_first, base)


@pytest.mark.numerics
def test_saved_delta_reloads_onto_a_fresh_pipeline(sd, tmp_path):
    clip, _, runs = sd
    first, out = next(iter(runs.items()))
    out.delta.save_pretrained(tmp_path / first)
    pipe = tiny_sd_pipeline(clip)
    want = prompt_embeds(edited_by_hand(pipe, out.delta))
    base = prompt_embeds(pipe)
    slug = SLUGModel.from_pretrained(pipe, tmp_path / first)
    assert_same_edit(prompt_embeds(pipe), want, base)
    assert slug.active_adapters == [first]


def low_rank_delta(pipe, ranks, seed=0):
    """A pipeline delta of the given rank per tensor (name -> rank), fingerprinted correctly."""
    params = dict(pipe.text_encoder.named_parameters())
    generator = torch.Generator().manual_seed(seed)
    tensors, targets = {}, {}
    for name, rank in ranks.items():
        p = params[name].detach()
        value = torch.randn(p.shape[0], rank, generator=generator) @ torch.randn(
            rank, p.shape[1], generator=generator
        )
        tensors[f"text_encoder.{name}"] = value * (0.2 * p.norm() / value.norm())
        targets[f"text_encoder.{name}"] = TargetInfo(
            list(p.shape), "float32", fingerprint(p), "text"
        )
    config = UnlearningConfig(
        concept="mlp", step=0.2, targets=targets, model_family="stable_diffusion"
    )
    return ConceptDelta(config, tensors)


def exact_export_error(pipe) -> float:
    """The most a full-rank export may differ from the delta: it drops only singular values
    below float32 noise, `s₀ · max(m, n) · eps` each, at most `min(m, n)` of them (s₀ ≤ ‖Δ‖)."""
    shapes = [p.shape for p in pipe.text_encoder.parameters() if p.dim() == 2]
    eps = torch.finfo(torch.float32).eps
    return max(min(s) ** 0.5 * max(s) * eps for s in shapes) + 1e-6  # + the factors' rounding


@pytest.mark.numerics
@pytest.mark.parametrize("source", ["delta", "weighted_stack", "mlp_only"])
def test_diffusers_lora_export_loads_natively_and_matches(sd, tmp_path, source):
    clip, _, runs = sd
    pipe = tiny_sd_pipeline(clip)
    slug = SLUGModel(pipe)
    if source == "mlp_only":  # diffusers cannot load PEFT-style keys for fc1/fc2 alone
        delta = low_rank_delta(
            pipe, {"encoder.layers.1.mlp.fc1.weight": 1, "encoder.layers.1.mlp.fc2.weight": 3}
        )
    else:
        delta = next(iter(runs.values())).delta
    slug.add_adapter("first", delta)
    if source == "weighted_stack":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slug.add_adapter("second", list(runs.values())[1].delta)
        slug.set_adapters(["first", "second"], [0.7, 0.4])
    if source == "mlp_only":  # 99.99999 % of the energy: ranks 1 and 3, zero-padded to one r
        report = export_diffusers_lora(delta, tmp_path / "lora", rank=0.9999999)
        assert sorted(report.ranks.values()) == [1, 3]
    else:
        report = export_diffusers_lora(delta if source == "delta" else slug, tmp_path / "lora")
    assert report.max_relative_error <= exact_export_error(pipe), report.relative_errors
    with safe_open(str(tmp_path / "lora" / LORA_WEIGHT_NAME), "pt") as handle:
        keys = list(handle.keys())
        metadata = json.loads(handle.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("text_encoder.text_model.encoder.layers.") for k in keys), keys
    assert all(".lora_linear_layer." in k for k in keys)
    assert metadata["text_encoder.r"] == metadata["text_encoder.lora_alpha"]
    want = prompt_embeds(pipe)  # the SLUG adapters, through hooks
    fresh = tiny_sd_pipeline(clip)
    base = prompt_embeds(fresh)
    fresh.load_lora_weights(str(tmp_path / "lora"), adapter_name="unlearned")
    assert_same_edit(prompt_embeds(fresh), want, base, rel=1e-3)
    fresh.set_adapters(["unlearned"], adapter_weights=[0.0])  # diffusers' own controls work
    torch.testing.assert_close(prompt_embeds(fresh), base, atol=1e-6, rtol=1e-6)


def test_truncated_lora_export_reports_its_error(tmp_path):
    pipe = tiny_sd_pipeline(tiny_clip())  # a delta of known ranks, 3 and 2: rank 1 truncates
    delta = low_rank_delta(
        pipe,
        {"encoder.layers.0.self_attn.v_proj.weight": 3, "encoder.layers.1.mlp.fc1.weight": 2},
    )
    full = export_diffusers_lora(delta, tmp_path / "full")
    low = export_diffusers_lora(delta, tmp_path / "low", rank=1)
    assert sorted(full.ranks.values()) == [2, 3] and set(low.ranks.values()) == {1}
    assert full.max_relative_error <= exact_export_error(pipe)
    assert low.max_relative_error > 0.1  # rank 1 of a rank-2 or -3 product of random factors
    assert low.nbytes < full.nbytes


# -- generation and evaluation ------------------------------------------------------------------------
def nearest_label(references):
    """A classifier: the label of the pixel-nearest reference image."""
    arrays = [(np.asarray(im, dtype=np.float32), label) for im, label in references]

    def classify(images):
        return [
            min(arrays, key=lambda ref: np.abs(ref[0] - np.asarray(im, np.float32)).sum())[1]
            for im in images
        ]

    return classify


@pytest.mark.numerics
def test_generation_before_and_after_with_fixed_seeds(sd, tmp_path):
    clip, processor, runs = sd
    first, out = next(iter(runs.items()))
    other = next(n for n in NAMES if n != first)
    pipe = tiny_sd_pipeline(clip)
    target, others = TEMPLATE.format(first), {TEMPLATE.format(other): other}
    cross = {"a red circle": "circle"}
    base_images = generate_images(
        pipe, [target, *others, *cross], 2, seed=3, progress=False, **STEPS
    )
    references = [(im, first) for im in base_images[target]]
    references += [(im, label) for p, label in {**others, **cross}.items() for im in base_images[p]]
    evaluator = DiffusionEvaluator(
        first,
        [target],
        others,
        cross_prompts=cross,
        clip_model=clip,
        processor=processor,
        scoring=DiffusionScoring(NAMES, TEMPLATE, classifier=nearest_label(references)),
        generation=GenerationSettings(2, 3, STEPS, progress=False),
    )
    slug = SLUGModel(pipe)
    slug.add_adapter(first, out.delta)
    comparison = evaluator.before_after(slug, grid_path=tmp_path / "grid.png")
    for prompt, images in base_images.items():  # before = the base pipeline, seed for seed
        for a, b in zip(images, comparison.images_before[prompt]):
            assert np.array_equal(np.asarray(a), np.asarray(b)), prompt
    assert comparison.before["UA"] == 0.0 and comparison.before["IRA"] == 1.0
    assert comparison.before["CRA"] == 1.0
    changed = [
        np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean()
        for a, b in zip(comparison.images_before[target], comparison.images_after[target])
    ]
    assert min(changed) > 0.5, changed  # the target's generations changed
    for key in ("target_clip_score", "target_zs_acc", "other_clip_score", "other_zs_acc"):
        for metrics in (comparison.before, comparison.after):
            assert 0.0 <= metrics[key] <= 100.0, (key, metrics)
    with Image.open(comparison.grid) as grid:
        assert grid.format == "PNG" and grid.size[0] > grid.size[1] > 100
    assert "UA" in comparison.table()


@pytest.mark.numerics
def test_evaluator_scores_with_clip_and_a_classifier(sd):
    clip, processor, _ = sd
    zorbs, _ = samples(4, seed=21, names=["zorb"])
    plims, _ = samples(4, seed=21, names=["plim"])
    images = {"Z": zorbs, "P": plims, "X": plims[:2]}
    answers = iter([["zorb", "zorb", "plim", "plim"], ["plim", "zorb", "plim", "plim"], ["a", "x"]])
    evaluator = DiffusionEvaluator(
        "zorb",
        ["Z"],
        {"P": "plim"},
        cross_prompts={"X": "x"},
        clip_model=clip,
        processor=processor,
        scoring=DiffusionScoring(NAMES, TEMPLATE, classifier=lambda ims: next(answers)),
    )
    metrics = evaluator.score(images)
    assert metrics["UA"] == 0.5 and metrics["IRA"] == 0.75 and metrics["CRA"] == 0.5
    assert metrics["target_zs_acc"] >= 0.75 and metrics["other_zs_acc"] >= 0.75, metrics
    assert metrics["target_clip_score"] > 0


@pytest.mark.numerics
def test_forget_set_generated_by_the_pipeline(sd):
    clip, processor, _ = sd
    pipe = tiny_sd_pipeline(clip)
    forget = generate_forget_set(pipe, "a photo of a zorb.", 3, seed=7, progress=False, **STEPS)
    again = generate_forget_set(pipe, "a photo of a zorb.", 3, seed=7, progress=False, **STEPS)
    assert forget.texts == ("a photo of a zorb.",) * 3
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(forget.images, again.images)
    )
    assert not np.array_equal(np.asarray(forget.images[0]), np.asarray(forget.images[1]))
    out = unlearn_pipeline(
        pipe,
        clip,
        processor,
        "zorb",
        retain_pairs(),
        forget=ForgetGeneration(3, "a photo of a zorb.", seed=7, generation_kwargs=STEPS),
        config=drift_config(),
        options=PipelineOptions(
            evaluator=TextDrift(processor, "zorb"), unlearn=UnlearnOptions(progress=False)
        ),
    )
    assert out.converged and out.result.after["drift"] <= 0.95
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(out.forget.images, forget.images)
    )
    SLUGModel(pipe).add_adapter("zorb", out.delta)  # fingerprints match the pipeline


# -- SDXL: two text encoders, one delta per encoder in one folder ------------------------------------
@pytest.fixture(scope="module")
def sdxl(processor):
    clip_l, clip_g = tiny_clip(seed=3), tiny_clip(seed=4)
    pipe = tiny_sdxl_pipeline(clip_l, clip_g)
    clips = {"text_encoder": clip_l, "text_encoder_2": clip_g}
    runs = {
        wanted: unlearn_pipeline(
            pipe,
            [TextEncoder(clips[c], c, evaluator=TextDrift(processor, "zorb")) for c in wanted],
            processor,
            "zorb",
            retain_pairs(),
            forget=retain_pairs(3, seed=6),
            config=drift_config(),
            options=UnlearnOptions(progress=False),
        )
        for wanted in [("text_encoder",), ("text_encoder_2",), ("text_encoder", "text_encoder_2")]
    }
    return clip_l, clip_g, runs


@pytest.mark.numerics
@pytest.mark.parametrize(
    "wanted", [("text_encoder",), ("text_encoder_2",), ("text_encoder", "text_encoder_2")]
)
def test_sdxl_one_or_both_encoders(sdxl, wanted, tmp_path):
    clip_l, clip_g, runs = sdxl
    out = runs[wanted]
    assert out.converged and out.components == list(wanted)
    assert [run.component for run in out.runs] == list(wanted)  # one typed run per encoder
    assert all(run.step == run.result.step and run.layer for run in out.runs)
    # SDXL reads the penultimate hidden state: CLIP-L's last block never reaches the UNet,
    # while text_encoder_2's does (through its pooled, projected output)
    assert out.usable_blocks == {
        c: {"text_encoder": (0,), "text_encoder_2": (0, 1)}[c] for c in wanted
    }
    for component, result in out.results.items():  # candidates: only blocks that reach the UNet
        blocks = {int(n.split("layers.")[1].split(".")[0]) for s in result.layers for n in s.names}
        assert blocks == set(out.usable_blocks[component])
    edited = {k.split(".", 1)[0] for k in out.delta.names}
    assert edited == set(wanted)
    pipe = tiny_sdxl_pipeline(clip_l, clip_g)
    for key in out.delta.names:
        component, relative = key.split(".", 1)
        tower = next(t for t in find_towers(getattr(pipe, component)) if t.kind == "text")
        block = int(relative.split("encoder.layers.")[1].split(".")[0])
        assert relative.startswith(tower.name("encoder.layers."))
        assert block in out.usable_blocks[component]
    out.delta.save_pretrained(tmp_path / "zorb")  # one folder, every encoder it touched
    base = {c: prompt_embeds_of(pipe, c) for c in ("text_encoder", "text_encoder_2")}
    hand = edited_by_hand(pipe, out.delta)
    SLUGModel.from_pretrained(pipe, tmp_path / "zorb")
    for component in ("text_encoder", "text_encoder_2"):
        now = prompt_embeds_of(pipe, component)
        if component in wanted:
            torch.testing.assert_close(now, prompt_embeds_of(hand, component), atol=1e-5, rtol=0)
            assert not torch.allclose(now, base[component], atol=1e-4)
        else:
            assert torch.equal(now, base[component])
    image = pipe("a photo of a zorb.", generator=torch.Generator().manual_seed(0), **STEPS)
    assert image.images[0].size == (16, 16)


def prompt_embeds_of(pipe, component):
    tokenizer = getattr(pipe, component.replace("text_encoder", "tokenizer"))
    tokens = tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        out = getattr(pipe, component)(tokens.input_ids, output_hidden_states=True)
    return torch.cat([out.hidden_states[-2].flatten(1), out[0].flatten(1)], dim=1)


@pytest.mark.numerics
def test_sdxl_choose_one_encoder_from_a_two_encoder_delta(sdxl):
    clip_l, clip_g, runs = sdxl
    both = runs[("text_encoder", "text_encoder_2")].delta
    assert both.config.component == "text_encoder+text_encoder_2"
    only_g = select_components(both, "text_encoder_2")
    assert {k.split(".", 1)[0] for k in only_g.names} == {"text_encoder_2"}
    assert only_g.config.step == both.config.metrics["components"]["text_encoder_2"]["step"]
    pipe = tiny_sdxl_pipeline(clip_l, clip_g)
    base = prompt_embeds_of(pipe, "text_encoder")
    slug = SLUGModel(pipe)
    slug.add_adapter("g", only_g)
    assert torch.equal(prompt_embeds_of(pipe, "text_encoder"), base)
    with pytest.raises(Exception, match="text_encoder_3"):
        select_components(both, "text_encoder_3")


@pytest.mark.numerics
def test_sdxl_lora_export_covers_both_encoders(sdxl, tmp_path):
    clip_l, clip_g, runs = sdxl
    delta = runs[("text_encoder", "text_encoder_2")].delta
    export_diffusers_lora(delta, tmp_path / "lora")
    with safe_open(str(tmp_path / "lora" / LORA_WEIGHT_NAME), "pt") as handle:
        prefixes = {k.split(".", 1)[0] for k in handle.keys()}  # noqa: SIM118 - safe_open is no dict
    assert prefixes == {"text_encoder", "text_encoder_2"}
    pipe = tiny_sdxl_pipeline(clip_l, clip_g)
    SLUGModel(pipe).add_adapter("zorb", delta)
    fresh = tiny_sdxl_pipeline(clip_l, clip_g)
    fresh.load_lora_weights(str(tmp_path / "lora"))
    torch.testing.assert_close(prompt_embeds(fresh), prompt_embeds(pipe), atol=1e-5, rtol=1e-5)


# -- refusals and structure ----------------------------------------------------------------------------
def other_activation(clip):
    changed = copy.deepcopy(clip)
    changed.text_model.config.hidden_act = "gelu"
    return changed


REFUSALS = [
    pytest.param(lambda c: tiny_clip(seed=1), FingerprintMismatchError, r"differs from the CLIP model's text tower at embeddings.token_embedding.weight.*openai/clip-vit-large-patch14", id="other-weights"),
    pytest.param(lambda c: tiny_clip(seed=0, width=48), FingerprintMismatchError, r"shape \[49408, 32\] vs \[49408, 48\]", id="other-width"),
    pytest.param(lambda c: tiny_clip(seed=0, layers=1), FingerprintMismatchError, r"lacks \['encoder.layers.1", id="fewer-blocks"),
    pytest.param(other_activation, FingerprintMismatchError, r"hidden_act='quick_gelu'.*'gelu'", id="other-activation"),
    pytest.param(lambda c: text_encoder_from(c), UnsupportedModelError, r"not a CLIP-like model", id="text-model-only"),
]  # fmt: skip


@pytest.mark.parametrize("make_clip, error, message", REFUSALS)
def test_a_clip_model_that_is_not_the_pipelines_text_encoder_is_refused(
    processor, make_clip, error, message
):
    clip = tiny_clip(seed=0)
    pipe = tiny_sd_pipeline(clip)
    with pytest.raises(error, match=message):
        unlearn_pipeline(
            pipe, make_clip(clip), processor, "zorb", retain_pairs(), forget=retain_pairs()
        )


def test_pipeline_and_argument_errors(processor, tmp_path):
    clip = tiny_clip(seed=0)
    pipe = tiny_sd_pipeline(clip)
    with pytest.raises(UnsupportedModelError, match="text_encoder_2"):
        check_text_encoder(pipe, clip, "text_encoder_2")
    with pytest.raises(UnsupportedModelError, match="SLUGModel"):
        unlearn_pipeline(SLUGModel(pipe), clip, processor, "zorb", retain_pairs())
    with pytest.raises(ValueError, match="towers"):
        unlearn_pipeline(
            pipe,
            clip,
            processor,
            "zorb",
            retain_pairs(),
            config=SLUGConfig("zorb", towers=("vision",)),
        )
    with pytest.raises(ConfigError, match="TextEncoder"):  # no single-or-mapping union
        unlearn_pipeline(pipe, {"text_encoder": clip}, processor, "zorb", retain_pairs())
    with pytest.raises(ConfigError, match="num_images"):
        ForgetGeneration(0)
    with pytest.raises(ValueError, match="processor"):
        unlearn_pipeline(pipe, clip, None, "zorb", retain_pairs())
    with pytest.raises(ValueError, match="num_images_per_prompt"):
        generate_images(pipe, ["a zorb"], 1, num_images_per_prompt=2)
    with pytest.raises(DeltaFormatError, match="CLIPModel's delta"):
        export_diffusers_lora(
            {"text_model.encoder.layers.0.mlp.fc1.weight": torch.zeros(64, 32)}, tmp_path
        )


@pytest.mark.parametrize(
    "kind, component, clip_skip, blocks",
    [
        ("sd", "text_encoder", None, [0, 1]),
        ("sd", "text_encoder", 1, [0]),
        ("sd2", "text_encoder", None, [0]),  # SD 2.x: the pipeline keeps fewer blocks than CLIP
        ("sdxl", "text_encoder", None, [0]),
        ("sdxl", "text_encoder_2", None, [0, 1]),
        ("sdxl", "text_encoder_2", 1, [0, 1]),
    ],
)
def test_usable_text_blocks(kind, component, clip_skip, blocks):
    clip = tiny_clip(seed=0)
    if kind == "sdxl":
        pipe = tiny_sdxl_pipeline(clip, tiny_clip(seed=1))
    else:
        pipe = tiny_sd_pipeline(clip, layers=1 if kind == "sd2" else None)
    assert usable_text_blocks(pipe, component, clip_skip) == blocks
    if kind == "sd2":
        check_text_encoder(pipe, clip)  # the CLIP's extra block is no obstacle


def test_a_processor_that_tokenizes_differently_is_warned_about(processor):
    from hf_slug.hosts.diffusion import _check_tokenizer

    pipe = tiny_sd_pipeline(tiny_clip(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _check_tokenizer(pipe, "text_encoder", processor, "a photo of a zorb.")
    pipe.tokenizer.model_max_length = 4  # the pipeline would see a truncated prompt
    with pytest.warns(UserWarning, match="tokenizes 'a photo of a zorb.'"):
        _check_tokenizer(pipe, "text_encoder", processor, "a photo of a zorb.")


def test_too_much_clip_skip_leaves_nothing_to_edit():
    pipe = tiny_sd_pipeline(tiny_clip(seed=0))
    with pytest.raises(ValueError, match="lower clip_skip"):
        usable_text_blocks(pipe, "text_encoder", clip_skip=2)


@pytest.mark.numerics
def test_clip_model_by_path_and_sd2_style_pipeline(tmp_path):
    clip = tiny_clip(seed=0)
    clip.save_pretrained(tmp_path / "clip")
    tiny_processor().save_pretrained(tmp_path / "clip")
    pipe = tiny_sd_pipeline(clip, layers=1)  # SD 2.x keeps 23 of OpenCLIP ViT-H's 24 blocks
    out = unlearn_pipeline(
        pipe,
        str(tmp_path / "clip"),
        None,
        "zorb",
        retain_pairs(),
        forget=retain_pairs(3, seed=6),
        config=drift_config(),
        options=PipelineOptions(
            evaluator=TextDrift(tiny_processor(), "zorb"), unlearn=UnlearnOptions(progress=False)
        ),
    )
    assert out.converged and out.usable_blocks == {"text_encoder": (0,)}
    assert all(".layers.0." in k for k in out.delta.names)
    assert all(".layers.0." in n for s in out.result.layers for n in s.names)
    SLUGModel(pipe).add_adapter("zorb", out.delta)
    assert tower_of(pipe.text_encoder, "text").path == ""


@pytest.mark.numerics
def test_a_pipeline_search_on_top_of_an_earlier_delta_sees_it(sd):
    clip, processor, runs = sd
    target, out = next(iter(runs.items()))
    first = out.result
    with pytest.warns(UserWarning, match="already meets the forget criterion"):
        again = shape_run(clip, processor, target, on_top_of=[first.deltas])
    assert again.result.before["forget_acc"] == pytest.approx(first.after["forget_acc"])
    assert again.result.before["forget_acc"] < first.before["forget_acc"]
