# Source of notebooks/quickstart.ipynb: edit this file, then run scripts/make_notebooks.py.

# %% [markdown]
# # hf_slug quickstart: unlearn an identity from CLIP with SLUG
#
# This notebook runs on the CPU in about a minute, offline, on the **embedded default**: a small `transformers.CLIPModel` shipped with hf_slug and trained on a captioned world of 26 people, 12 objects × 8 styles and handwritten digits. Everything here works the same on any `CLIPModel.from_pretrained(...)`.
#
# SLUG computes one gradient of a forget loss and one of a retain loss, ranks the layers by *importance* and *alignment*, and takes one step on a single layer, with the step size found by a short search.

# %%
import os

QUICK = os.environ.get("HF_SLUG_NOTEBOOK_QUICK") == "1"  # fewer images in tests
SIZE = dict(per_identity=4, per_concept=2) if QUICK else dict(per_identity=8, per_concept=3)
N_FORGET = 16 if QUICK else 32

# %%
from hf_slug import ConceptDelta, SLUGConfig, SLUGModel, unlearn
from hf_slug.demo.protocol import forget_pairs, identity_evaluator, identity_report, retain_pairs
from hf_slug.demo.run import load_embedded
from hf_slug.demo.world import World

model, processor = load_embedded()  # CLIPModel.from_pretrained(<hf_slug>/demo/embedded_clip)
world = World(seed=0)
print(len(world.identities), "identities, e.g.", world.identities[:4])

# %% [markdown]
# ## The forget set, the retain set, and validation data of its own
#
# The search scores each trial on the **val** split; the numbers we report come from the **test** split, which neither training nor the search has seen.

# %%
target = "Eileen Collins"
forget = forget_pairs(world, target, N_FORGET)  # (image, caption) pairs
retain = retain_pairs(world, exclude=[target], per_concept=2 if QUICK else 4)
validation = identity_evaluator(world, processor, target, "val", **SIZE)
test = identity_evaluator(world, processor, target, "test", **SIZE)
forget[0][0].resize((96, 96))

# %%
config = SLUGConfig(concept=target, candidate_labels=world.identities, top_k=2 if QUICK else 4)
result = unlearn(model, processor, forget, retain, config, evaluator=validation)
print(result.report())

# %% [markdown]
# ## The Pareto front
#
# Each dot is one weight matrix. Good layers have high importance (the concept lives there) and low alignment (forgetting there barely moves the retain gradient). The search ran on the front; the circled layer was chosen.

# %%
from IPython.display import Image, display

display(Image(filename=str(result.plot_pareto("pareto.png"))))

# %% [markdown]
# ## Before and after, on held-out test views

# %%
before = identity_report(test(model))
slug = SLUGModel(model)
slug.add_adapter("eileen", ConceptDelta.from_result(result, concept_kind="identity"))
after = identity_report(test(model))
for key in ("FA@1", "FA@5", "retain", "utility"):
    print(f"{key:>8}: {before[key]:5.1f} -> {after[key]:5.1f}")

# %% [markdown]
# ## The image–text similarity matrix
#
# Rows are test images of six people, columns their names. After SLUG the forgotten person's image no longer matches the name.

# %%
from hf_slug import ZeroShotEvaluator, ZeroShotTask
from hf_slug.plots import plot_similarity

names = [target] + [n for n in world.identities if n != target][:5]
views = sorted(world.samples("identity", "test", 1, names), key=lambda s: names.index(s.label))
faces = ZeroShotEvaluator(
    processor,
    [
        ZeroShotTask(
            "faces",
            [s.image for s in views],
            [s.label for s in views],
            names,
            prompts={n: [f"{n}."] for n in names},
        )
    ],
)
with slug.disable_adapters():
    sim_before = faces.similarity(model, "faces")
sim_after = faces.similarity(model, "faces")
display(Image(filename=str(plot_similarity(sim_before, sim_after, names, names, "similarity.png"))))

# %% [markdown]
# ## Stack a second identity
#
# Each concept gets its own gradient, layer and step at the original weights; applying several means adding their deltas.

# %%
second = "Grace Hopper"
with slug.disable_adapters():  # compute at the original weights
    result2 = unlearn(
        model,
        processor,
        forget_pairs(world, second, N_FORGET),
        retain_pairs(world, exclude=[target, second], per_concept=2 if QUICK else 4),
        SLUGConfig(concept=second, candidate_labels=world.identities, top_k=2 if QUICK else 4),
        evaluator=identity_evaluator(world, processor, second, "val", **SIZE),
    )
slug.add_adapter("grace", result2)
both = identity_evaluator(world, processor, [target, second], "test", **SIZE)
with slug.disable_adapters():
    original = identity_report(both(model), [target, second])
    print("original:", {k: round(v, 1) for k, v in original.items()})
stacked = identity_report(both(model), [target, second])
print("stacked: ", {k: round(v, 1) for k, v in stacked.items()})
slug

# %% [markdown]
# ## Save, merge, export

# %%
slug.save_pretrained("deltas")  # deltas/eileen/, deltas/grace/, slug_stack.json
report = slug.to_peft_lora("lora", rank=8)  # a PEFT LoRA adapter, truncated to rank 8
print("LoRA relative error:", f"{report.max_relative_error:.3f}", "size:", report.nbytes, "bytes")
merged = slug.merge_and_unload()  # a plain CLIPModel with both concepts removed
merged.save_pretrained("clip-without-two")
print(type(merged).__name__)
