"""The README's quickstart (its first ```python block) runs as written, offline.

tests/test_readme.py checks that every README block binds to the API; this one executes the
quickstart itself, through the real loading paths, on the embedded CLIP and its world:

* `openai/clip-vit-base-patch32` is a hand-made Hugging Face cache (`models--openai--clip-vit-
  base-patch32/snapshots/<commit>/`, `refs/main`) holding the embedded CLIP's files, so
  `CLIPModel.from_pretrained` and `CLIPProcessor.from_pretrained` go through transformers and
  huggingface_hub with HF_HUB_OFFLINE=1;
* `data/elon` holds one embedded identity's training views (a caption `.txt` beside each image),
  `data/generic` the other identities, objects, styles and digits; `deltas/taylor` is made
  beforehand by the same block's lines up to `delta.save_pretrained`, for a second identity;
* `push_to_hub` stops at the `huggingface_hub.HfApi` boundary (tests/test_hub.py's recorder).

The block's text changes by string substitution only, and only in names: the embedded model
knows no "Elon Musk" or "Taylor Swift", so the concept name and the adapter names derived from
it are replaced by two of the world's identities (`SUBSTITUTIONS`); `celebrity_names` is
defined beforehand as the world's identity names. Every other character runs as written.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest
import torch
from test_hub import RecordingApi, cache_repo, files_of
from test_readme import BLOCKS
from transformers import CLIPModel

from hf_slug import ConceptDelta
from hf_slug.demo.protocol import forget_pairs, retain_pairs
from hf_slug.demo.run import EMBEDDED
from hf_slug.demo.world import World
from hf_slug.names import default_adapter_name

pytestmark = pytest.mark.numerics  # asserts that the README's default search converges

QUICKSTART = BLOCKS[0]  # the README's first ```python block
REPO_ID = "openai/clip-vit-base-patch32"
FIRST, SECOND = "Marcus Brennholt", "Eileen Collins"  # the demo's pair (README's tables)
SUBSTITUTIONS = {  # README name -> embedded-world name; nothing else in the block changes
    "Elon Musk": FIRST,
    "elon_musk": default_adapter_name(FIRST),
    "taylor_swift": default_adapter_name(SECOND),
}
N_FORGET, N_RETAIN = 16, 2  # views of the target; views per other identity (the demo's quick sizes)


def substituted(source: str, substitutions: dict[str, str]) -> str:
    """`source` with each key replaced; a key the block no longer holds fails loudly."""
    for old, new in substitutions.items():
        assert old in source, f"the README quickstart no longer contains {old!r}: update this test"
        source = source.replace(old, new)
    return source


def write_folder(folder: Path, pairs: list[tuple]) -> None:
    """An image folder with a caption `.txt` beside each image (the README's format)."""
    folder.mkdir(parents=True)
    for i, (image, caption) in enumerate(pairs):
        image.save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(caption, encoding="utf-8")


def run_block(source: str, namespace: dict, name: str) -> dict:
    exec(compile(source, f"<README quickstart: {name}>", "exec"), namespace)
    return namespace


@pytest.fixture
def readme_world(tmp_path, monkeypatch):
    """The working directory, Hub cache and Hub boundary the quickstart expects."""
    cache = tmp_path / "hf_home" / "hub"
    cache_repo(cache, REPO_ID, files_of(EMBEDDED), "c" * 40)  # all the embedded CLIP's files
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.setattr(RecordingApi, "calls", [])
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    world = World(seed=0)
    write_folder(work / "data" / "elon", forget_pairs(world, FIRST, N_FORGET))
    write_folder(work / "data" / "taylor", forget_pairs(world, SECOND, N_FORGET))
    write_folder(
        work / "data" / "generic", retain_pairs(world, [FIRST, SECOND], per_concept=N_RETAIN)
    )
    return work, world


def test_the_quickstart_runs_as_written(readme_world):
    work, world = readme_world
    assert f'CLIPModel.from_pretrained("{REPO_ID}")' in QUICKSTART, "not the quickstart block"
    torch.manual_seed(0)
    prelude = {"celebrity_names": list(world.identities)}
    # deltas/taylor: the block's own lines up to `delta.save_pretrained`, for the second identity
    lines = QUICKSTART.splitlines(keepends=True)
    upto = next(i for i, line in enumerate(lines) if "delta.save_pretrained(" in line) + 1
    second = {"Elon Musk": SECOND, "data/elon": "data/taylor", "deltas/elon": "deltas/taylor"}
    second |= {'"pareto.png"': '"pareto_taylor.png"'}
    taylor = run_block(substituted("".join(lines[:upto]), second), dict(prelude), "deltas/taylor")
    assert taylor["result"].converged, taylor["result"].report()

    ns = run_block(substituted(QUICKSTART, SUBSTITUTIONS), dict(prelude), "as written")

    result, merged = ns["result"], ns["merged"]
    assert result.converged, result.report()
    assert result.after["forget_acc"] <= result.config.forget_target
    assert (work / "pareto.png").stat().st_size > 10_000
    deltas = {}
    for name in ("elon", "taylor"):
        folder = work / "deltas" / name
        assert {"slug_config.json", "slug_model.safetensors"} <= {p.name for p in folder.iterdir()}
        deltas[name] = ConceptDelta.from_pretrained(folder)
    assert deltas["elon"].config.concept == FIRST and deltas["taylor"].config.concept == SECOND
    assert deltas["elon"].config.base_model_name_or_path == REPO_ID

    # merged: a plain CLIPModel that differs from the original exactly in the edited tensors,
    # by the sum of the two deltas
    assert type(merged) is CLIPModel and merged is ns["model"]
    assert not any(m._forward_hooks for m in merged.modules())  # no adapter left unmerged
    original = CLIPModel.from_pretrained(EMBEDDED).state_dict()
    after = merged.state_dict()
    changed = {k for k in original if not torch.equal(original[k], after[k])}
    expected = {}
    for delta in deltas.values():
        for target, tensor in delta.dense().items():
            expected[target] = expected.get(target, 0) + tensor
    assert changed == set(expected)
    for target, tensor in expected.items():
        torch.testing.assert_close(after[target] - original[target], tensor, rtol=1e-3, atol=1e-5)

    # push_to_hub("me/clip-forget-two"): one upload, a stack of both deltas with a model card
    calls = RecordingApi.calls
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert {c[1] for c in calls} == {"me/clip-forget-two"}
    upload = calls[-1][2]
    a, b = default_adapter_name(FIRST), default_adapter_name(SECOND)
    for file in (
        "README.md",
        "slug_stack.json",
        f"{a}/slug_model.safetensors",
        f"{b}/slug_config.json",
    ):
        assert file in upload["files"], upload["files"]
    card = upload["card"]
    assert "library_name: hf_slug" in card and f"base_model: {REPO_ID}" in card
    assert FIRST in card and SECOND in card and "me/clip-forget-two" in card
