# Source of notebooks/llava.ipynb: edit this file, then run scripts/make_notebooks.py.

# %% [markdown]
# # Unlearning a person from LLaVA-1.5 with SLUG
#
# SLUG (Single Layer Unlearning Gradient) removes a concept by editing **one weight matrix** once,
# along the gradient of a forget loss. In a LLaVA-style model the edit goes into the **CLIP vision
# tower** the language model reads its image tokens from (LLaVA-1.5:
# `openai/clip-vit-large-patch14-336`); the language model and the projector stay bit-identical.
# SLUG's losses need both CLIP towers, so the gradients come from the two-tower `CLIPModel` the
# VLM's vision tower came from, and only the blocks whose output reaches the language model are
# candidates (LLaVA reads the penultimate layer, so the last block never is).
#
# This notebook unlearns one person, compares the model's answers to "Who is in this image?"
# before and after, stacks a second person, fuses and unfuses, saves the deltas and merges them.
#
# **Two modes, same cells.** With `EMBEDDED=False` (the default on a CUDA machine) it loads
# `llava-hf/llava-1.5-7b-hf` in fp16 and `openai/clip-vit-large-patch14-336` from the Hub (about
# 16 GB of downloads, a 24 GB GPU) and reads photos of people from a folder. With `EMBEDDED=True`
# (the default without a GPU, and in the tests) it runs on hf_slug's **embedded models, offline,
# on the CPU** in a few minutes:
#
# * the **embedded CLIP** (`hf_slug.demo.run.load_embedded()`), a small `CLIPModel` trained on a
#   captioned world of 26 people, 12 objects × 8 styles and handwritten digits
#   (`hf_slug.demo.world`);
# * the **embedded VLM** (`hf_slug.demo.vlm.load_embedded_vlm()`), a real
#   `LlavaForConditionalGeneration` whose vision tower is the embedded CLIP's and whose projector
#   and small Llama-style language model were trained to answer "Who is in this picture?" with the
#   person's name (`model_cards/embedded_vlm.md`). Its answers below are real answers.

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
# `unlearn_vlm` first checks that the VLM's vision tower is the CLIP model's vision tower, tensor
# by tensor (an fp16 VLM built from an fp32 CLIP passes), then computes everything on the CLIP
# model and renames the delta into the VLM (`model.vision_tower.encoder.layers.…`).

# %%
from transformers import AutoProcessor, CLIPModel, CLIPProcessor, LlavaForConditionalGeneration

from hf_slug.demo.run import load_embedded
from hf_slug.demo.vlm import load_embedded_vlm

LLAVA_MODEL = "llava-hf/llava-1.5-7b-hf"
CLIP_MODEL = "openai/clip-vit-large-patch14-336"  # LLaVA-1.5's vision tower, both towers

if EMBEDDED:
    clip, clip_processor = load_embedded()  # CLIPModel + CLIPProcessor, fp32
    vlm, processor = load_embedded_vlm()  # LlavaForConditionalGeneration + LlavaProcessor, fp32
    MAX_NEW_TOKENS = 4  # its answers are a name, an object or a style
    BATCH = 32  # images per gradient batch
else:
    clip = CLIPModel.from_pretrained(CLIP_MODEL, dtype=torch.float32).to(DEVICE).eval()
    clip_processor = CLIPProcessor.from_pretrained(CLIP_MODEL)
    vlm = LlavaForConditionalGeneration.from_pretrained(LLAVA_MODEL, dtype=torch.float16)
    vlm = vlm.to(DEVICE).eval()
    processor = AutoProcessor.from_pretrained(LLAVA_MODEL)
    MAX_NEW_TOKENS = 16
    BATCH = 8  # gradient batches are averaged: a smaller batch only saves GPU memory

print(
    type(vlm).__name__,
    "| vision feature layer:",
    vlm.config.vision_feature_layer,
    "| vision blocks:",
    vlm.config.vision_config.num_hidden_layers,
)

# %% [markdown]
# ## The photos: forget set, retain set, validation and test
#
# With the real models, put photos of people in a folder, one sub-folder per person:
#
# ```
# photos/
#   Elon Musk/       001.jpg 002.jpg …   ← the person to forget (30–50 photos)
#   Jeff Bezos/      …                   ← other people: retain set and evaluation
#   Taylor Swift/    …
#   …
# ```
#
# Each person's photos are split by position: 4 of every 5 for training (the forget set for the
# target, the retain set for the others, captioned `"a photo of {name}."`; `unlearn_vlm` holds
# out a quarter of each, `SLUGConfig.validation_share`, to score its trials on) and 1 for
# **test** (the numbers reported here, never seen by the search). Generic captioned images (say
# 500 COCO pairs, `hf_slug.load_pairs("coco_sample/")`) make a better retain set still.
#
# With the embedded models the world's identities stand in for the people: 26 drawn and
# photographed people with training and test views (`hf_slug.demo.protocol`), and the retain set
# adds its objects and digits.

# %%
from pathlib import Path

from PIL import Image as PILImage

from hf_slug import ZeroShotEvaluator
from hf_slug.demo.protocol import forget_pairs, retain_pairs
from hf_slug.demo.world import World
from hf_slug.evaluation import (
    FORGET_TASK,
    RETAIN_TASK,
    UTILITY,
    accuracy_key,
    identity_tasks,
    target_task,
)

if EMBEDDED:
    world = World(seed=0)
    PEOPLE = world.identities
    CONCEPT, SECOND = "Clara Alderwick", "Hugo Iverson"

    def forget_set(name):
        return forget_pairs(world, name, 16 if QUICK else 32)

    def retain_set(exclude):
        return retain_pairs(world, exclude=exclude, per_concept=2 if QUICK else 4)

    def photos(split, names, n=4 if QUICK else 8):
        return [(s.image, s.label) for s in world.samples("identity", split, n, names)]
else:
    PHOTOS = Path(os.environ.get("HF_SLUG_PHOTOS", "photos"))
    PEOPLE = sorted(p.name for p in PHOTOS.iterdir() if p.is_dir())
    CONCEPT, SECOND = "Elon Musk", "Taylor Swift"  # two of the sub-folders
    SPLIT_OF = {0: "train", 1: "train", 2: "train", 3: "train", 4: "test"}

    def photos(split, names, n=None):
        pairs = []
        for name in names:
            files = sorted(
                f
                for f in (PHOTOS / name).iterdir()
                if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
            )
            mine = [f for i, f in enumerate(files) if SPLIT_OF[i % 5] == split][:n]
            pairs += [(PILImage.open(f).convert("RGB"), name) for f in mine]
        return pairs

    def forget_set(name):
        return [(im, f"a photo of {name}.") for im, _ in photos("train", [name])]

    def retain_set(exclude):
        others = [p for p in PEOPLE if p not in exclude]
        return [(im, f"a photo of {name}.") for im, name in photos("train", others)]


def held_out(targets, split):
    """CLIP zero-shot tasks on `split` photos: the targets' (forget) and everyone else's."""
    return ZeroShotEvaluator(clip_processor, identity_tasks(photos(split, PEOPLE), PEOPLE, targets))


def summary(metrics, targets):
    """Forget accuracy (top-1 on the person's name; per person when several), retain accuracy
    and utility, in %."""
    targets = [targets] if isinstance(targets, str) else list(targets)
    keys = {FORGET_TASK: accuracy_key(FORGET_TASK)}
    if len(targets) > 1:
        keys.update({target_task(t): accuracy_key(target_task(t)) for t in targets})
    keys.update({RETAIN_TASK: accuracy_key(RETAIN_TASK), UTILITY: UTILITY})
    return {label: round(100 * metrics[key], 1) for label, key in keys.items()}


forget = forget_set(CONCEPT)
print(len(PEOPLE), "people;", len(forget), "forget photos of", repr(CONCEPT))
forget[0][0].resize((96, 96))

# %% [markdown]
# ## Unlearn one person
#
# `unlearn_vlm` takes the gradients once, at the original weights, and searches a step size on the
# usable vision layers (every trial from the original weights) and keeps the layer that reaches
# zero forget accuracy with the highest utility. Given the VLM's processor (`vlm_processor=`), it
# searches on **the VLM's own answers**: the gradients are those of the VLM's answer loss, and
# each trial's edit is copied into the VLM's tower, which is asked who is in the held-out photos:
# the target must no longer be named, and among the layers that manage it the one whose other
# answers stay right most often wins (the report below). (Without it, the criterion is CLIP
# zero-shot on the pooled class token, which the language model does not read:
# `benchmarks/vlm_criterion.md` measures the difference.) The result's delta is keyed by the
# VLM's own parameter names. Nothing is modified.

# %%
from IPython.display import Image, display

from hf_slug import SLUGConfig, UnlearnOptions, VLMOptions, unlearn_vlm


def unlearn_person(name, exclude):
    """SLUG on one person, searched on the VLM's answers."""
    config = SLUGConfig(
        concept=name, candidate_labels=PEOPLE, top_k=2 if QUICK else 4, batch_size=BATCH
    )
    return unlearn_vlm(
        vlm,
        clip,
        clip_processor,
        forget_set(name),
        retain_set(exclude),
        config,
        vlm_processor=processor,
        options=VLMOptions(unlearn=UnlearnOptions(progress=not QUICK)),
    )


out = unlearn_person(CONCEPT, exclude=[CONCEPT])
print(out.result.report())
print(
    "usable vision blocks:",
    out.usable_blocks,
    "| delta:",
    out.delta.names,
    f"{out.delta.nbytes() / 1e6:.2f} MB",
)
display(Image(filename=str(out.result.plot_pareto("pareto.png"))))

# %% [markdown]
# ## Before and after: the answers
#
# `SLUGModel(vlm)` attaches the delta to the vision tower (forward hooks; weights untouched until
# you fuse). `VLMIdentityEvaluator` asks "Who is in this image?" for each test photo with greedy
# decoding, with the delta disabled and enabled, and scores name-in-answer accuracy
# (`forget_acc` on the target's photos, `retain_acc` on everyone else's).

# %%
import matplotlib.pyplot as plt

from hf_slug import AskSettings, SLUGModel, VLMIdentityEvaluator

slug = SLUGModel(vlm)
A1, A2 = (f"no_{name.lower().replace(' ', '_')}" for name in (CONCEPT, SECOND))
slug.add_adapter(A1, out.delta)

others = [p for p in PEOPLE if p not in (CONCEPT, SECOND)][:3]
test_photos = photos("test", [CONCEPT, SECOND, *others], 2 if QUICK else 4)
ask = VLMIdentityEvaluator(
    processor,
    [im for im, _ in test_photos],
    [name for _, name in test_photos],
    target=CONCEPT,
    settings=AskSettings(max_new_tokens=MAX_NEW_TOKENS),
)
comparison = ask.before_after(slug)
print(comparison.table())


def answers_figure(comparison, path):
    """Each test photo with the answer before and after (a PNG)."""
    n = len(test_photos)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 3.0), squeeze=False)
    for ax, (image, name), a, b in zip(
        axes[0], test_photos, comparison.answers_before, comparison.answers_after
    ):
        ax.imshow(image)
        ax.axis("off")
        ax.set_title(f"{name}\nbefore: {a[:24]}\nafter: {b[:24]}", fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


for (_, name), a, b in zip(test_photos, comparison.answers_before, comparison.answers_after):
    print(f"{name:<22} before: {a[:30]!r:<34} after: {b[:30]!r}")
display(Image(filename=answers_figure(comparison, "answers_before_after.png")))

# %% [markdown]
# ### What the numbers mean
#
# The table and the answers above are what the VLM said about test photos the search never saw,
# asked with a phrasing it never trained on: `forget_acc` is how often it names the target on
# the target's photos, `retain_acc` how often it names the others on theirs, before and after.
# With `QUICK=True` (the tests' setting) each person has 2 test photos, so one photo is 50 points.
#
# Below, for comparison, the same edit applied to the two-tower `CLIPModel`: its zero-shot
# accuracy on held-out **test** photos. CLIP reads the pooled class token, the language model
# the patch tokens, so the two can disagree.

# %%
import warnings


def image_tokens(pairs):
    """The image tokens the language model reads (projected vision features), flattened."""
    pixels = processor.image_processor(images=[im for im, _ in pairs], return_tensors="pt")
    pixels = pixels["pixel_values"].to(device=vlm.device, dtype=vlm.dtype)
    with torch.no_grad():
        features = vlm.get_image_features(pixel_values=pixels)
    features = getattr(features, "pooler_output", features)  # transformers 5 wraps them
    if isinstance(features, (list, tuple)):
        features = torch.stack(list(features))
    return features.flatten(1).float().cpu()


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


print("CLIP zero-shot on held-out test images (%):")
clip_side([out.result], CONCEPT)

# %% [markdown]
# ## Stack a second person
#
# The paper's recipe: each concept gets its own gradients at the **original** weights (the CLIP
# model is never modified), its own layer and step; applying several means adding their deltas.
# Weights work as in diffusers: `set_adapters(..., adapter_weights=[1.0, 0.5])` applies half of
# the second edit.
#
# Each delta met its criterion alone, on the original weights. Added together, single-layer edits
# can interact (an edit in one block changes what enters the other edited block; two edits of one
# tensor simply add), so the VLM is asked again with both deltas active, for each person: read
# both tables (a person can come back). (`hf_slug.unlearn_stack` searches a stack jointly for
# plain CLIP models.)

# %%
with slug.disable_adapters():  # the second delta's gradients and search at θ⁰, as the first's
    out2 = unlearn_person(SECOND, exclude=[CONCEPT, SECOND])
print(f"{SECOND}: layer {out2.result.chosen.label}, step s = {out2.result.step:.3g}")
slug.add_adapter(A2, out2.delta)
slug.set_adapters([A1, A2], adapter_weights=[1.0, 1.0])
print(slug)
for target in (CONCEPT, SECOND):  # both deltas active; retain_acc covers everyone else
    asked = VLMIdentityEvaluator(processor, ask.images, ask.names, target, settings=ask.settings)
    comparison2 = asked.before_after(slug)
    print(f"asked about {target}, both deltas active:\n{comparison2.table()}")
answers_figure(comparison2, "answers_stacked.png")
print("CLIP zero-shot on held-out test images, both deltas (%):")
clip_side([out.result, out2.result], [CONCEPT, SECOND])

slug.set_adapters([A1, A2], adapter_weights=[1.0, 0.5])  # the second edit at half strength
print(slug)
slug.set_adapters([A1, A2], adapter_weights=[1.0, 1.0])

# %% [markdown]
# ## Fuse, unfuse, save, merge
#
# `fuse()` writes base + Σ weight·delta into the vision tower's weights (no hooks at inference);
# `unfuse()` restores the originals exactly. `save_pretrained` writes one folder per delta plus
# `slug_stack.json`; `push_to_hub` uploads them with a model card (shown, switched off: it needs
# the network and a token). `to_peft_lora` exports the sum as a PEFT LoRA on the vision tower.
# `merge_and_unload()` writes the deltas in for good and returns the plain VLM; only its vision
# tower changed, so that is all we save.

# %%
hooked = image_tokens(test_photos)
slug.fuse()
fused = image_tokens(test_photos)
slug.unfuse()
print("fused == hooked:", torch.allclose(fused, hooked, atol=1e-2, rtol=1e-2))

folder = slug.save_pretrained("deltas")
for path in sorted(folder.rglob("*")):
    if path.is_file():
        print(f"  {path}  {path.stat().st_size / 1e6:.3f} MB")

PUSH_TO_HUB = False  # needs the network and `hf auth login`
if PUSH_TO_HUB:
    slug.push_to_hub("your-name/llava-1.5-7b-slug-without-two-people")

report = slug.to_peft_lora("lora", rank=None)
print(
    "PEFT LoRA:",
    f"max relative error {report.max_relative_error:.1e}",
    f"| {report.nbytes / 1e6:.2f} MB",
)

tower = {n: p.clone() for n, p in vlm.model.vision_tower.named_parameters()}
merged = slug.merge_and_unload()  # the same VLM object, both people written in
changed = [
    n for n, p in merged.model.vision_tower.named_parameters() if not torch.equal(p, tower[n])
]
print("changed tensors:", changed)  # the deltas' tensors, nothing else
merged.model.vision_tower.save_pretrained("vision_tower_without_two_people")

# %% [markdown]
# ## Where to go from here
#
# * More people at once: compute each delta at the original weights and stack them, as above
#   (the paper forgets up to 6 identities together in CLIP this way), and ask the VLM about
#   every one of them with the stack active.
# * A general-capability check: pass `capability_probe=` to `VLMIdentityEvaluator` (e.g. accuracy
#   on a small VQA set) to see that the model still describes images.
# * Other LLaVA-style models whose vision tower is a CLIP ViT work the same way; `unlearn_vlm`
#   reads which layers reach the language model from `config.vision_feature_layer`.
