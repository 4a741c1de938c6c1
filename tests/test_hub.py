"""Hub paths: loading through a hand-built HF cache offline, pushing up to the HfApi boundary."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from conftest import random_images, tiny_clip
from test_adapters import make_delta

from hf_slug import DeltaFormatError, HubError
from hf_slug.hub import model_card, push_to_hub
from hf_slug.model import SLUGModel

COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path], commit: str, ref: str = "main"):
    """Lay out `models--org--name/snapshots/<commit>/…` and `refs/<ref>` by hand."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    for relative, source in files.items():
        (snapshot / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, snapshot / relative)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)


@pytest.fixture
def saved(tmp_path):
    model = tiny_clip()
    deltas = {
        "a": make_delta(model, "Ada Byron", ["vision_model.encoder.layers.0.mlp.fc1.weight"], 0),
        "b": make_delta(model, "Bob Stone", ["text_model.encoder.layers.1.mlp.fc2.weight"], 1),
    }
    for name, delta in deltas.items():
        delta.config.base_model_name_or_path = "org/tiny-clip"
        delta.save_pretrained(tmp_path / "deltas" / name)
    return model, deltas, tmp_path / "deltas"


def files_of(folder: Path, prefix: str = "") -> dict[str, Path]:
    return {prefix + str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}


def test_load_by_repo_id_from_the_cache_offline(saved, tmp_path, processor):
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # conftest sets HF_HUB_OFFLINE=1
    model, deltas, folder = saved
    cache = tmp_path / "hf_cache"
    cache_repo(cache, "org/forget-ada", files_of(folder / "a"), COMMIT_A)
    cache_repo(cache, "org/forget-ada", files_of(folder / "b"), COMMIT_B, ref="bob")
    slug = SLUGModel.from_pretrained(copy.deepcopy(model), "org/forget-ada", cache_dir=cache)
    assert slug.active_adapters == ["ada_byron"]
    slug.load_adapter("org/forget-ada", revision="bob", cache_dir=cache)
    assert slug.active_adapters == ["ada_byron", "bob_stone"]
    with pytest.raises(HubError, match="not in the local Hugging Face cache"):
        slug.load_adapter("org/never-downloaded", cache_dir=cache)


def test_load_a_stack_and_a_subfolder_by_repo_id(saved, tmp_path):
    model, deltas, _ = saved
    slug = SLUGModel(copy.deepcopy(model))
    for name, delta in deltas.items():
        slug.add_adapter(name, delta, weight=0.5)
    slug.save_pretrained(tmp_path / "stack")
    cache = tmp_path / "hf_cache"
    cache_repo(cache, "org/stack", files_of(tmp_path / "stack"), COMMIT_A)
    loaded = SLUGModel.from_pretrained(tiny_clip(), "org/stack", cache_dir=cache)
    assert loaded.weights == {"a": 0.5, "b": 0.5}
    one = SLUGModel.from_pretrained(tiny_clip(), "org/stack", subfolder="b", cache_dir=cache)
    assert list(one.adapters) == ["bob_stone"]


def test_repo_without_a_delta_gets_a_clear_error_and_peft_a_pointer(tmp_path):
    cache = tmp_path / "hf_cache"
    (tmp_path / "README.md").write_text("just a card")
    (tmp_path / "adapter_config.json").write_text("{}")
    cache_repo(cache, "org/nothing", {"README.md": tmp_path / "README.md"}, COMMIT_A)
    cache_repo(
        cache, "org/a-lora", {"adapter_config.json": tmp_path / "adapter_config.json"}, COMMIT_A
    )
    with pytest.raises(DeltaFormatError, match="holds no hf_slug delta"):
        SLUGModel.from_pretrained(tiny_clip(), "org/nothing", cache_dir=cache)
    with pytest.raises(DeltaFormatError, match="peft.PeftModel.from_pretrained"):
        SLUGModel.from_pretrained(tiny_clip(), "org/a-lora", cache_dir=cache)


class RecordingApi:
    """Stands in for `huggingface_hub.HfApi` at the network boundary and records each call."""

    calls: list = []

    def __init__(self, token=None):
        self.token = token

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def create_branch(self, repo_id, **kwargs):
        self.calls.append(("create_branch", repo_id, kwargs))

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        folder = Path(folder_path)
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        card = (folder / "README.md").read_text()
        self.calls.append(("upload_folder", repo_id, {**kwargs, "files": files, "card": card}))
        return "commit-info"


@pytest.fixture
def api(monkeypatch):
    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    return RecordingApi


def test_push_sends_the_delta_and_a_card(saved, api):
    _, _, folder = saved
    assert push_to_hub(folder / "a", "org/forget-ada", private=True, token="t") == "commit-info"
    (create, repo, create_kwargs), (upload, _, upload_kwargs) = api.calls
    assert (create, repo) == ("create_repo", "org/forget-ada")
    assert create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert upload_kwargs["files"] == ["README.md", "slug_config.json", "slug_model.safetensors"]
    card = upload_kwargs["card"]
    assert "library_name: hf_slug" in card and "base_model: org/tiny-clip" in card
    for needle in (
        "unlearning",
        "slug",
        "Ada Byron",
        "vision_model.encoder.layers.0.mlp.fc1",
        "SLUGModel.from_pretrained",
        "org/forget-ada",
        "Limitations",
        "does not stop someone who feeds prompt embeddings",
    ):
        assert needle in card, needle
    assert upload_kwargs["commit_message"] == "Upload SLUG unlearning delta: Ada Byron"
    assert not (folder / "a" / "README.md").exists()  # the user's folder is not modified


def test_slug_model_push_with_revision_uploads_a_stack(saved, api):
    model, deltas, _ = saved
    slug = SLUGModel(copy.deepcopy(model))
    for name, delta in deltas.items():
        slug.add_adapter(name, delta)
    slug.push_to_hub("org/two", revision="v1", commit_message="two concepts")
    kinds = [c[0] for c in api.calls]
    assert kinds == ["create_repo", "create_branch", "upload_folder"]
    upload = api.calls[-1][2]
    assert upload["revision"] == "v1" and upload["commit_message"] == "two concepts"
    assert "slug_stack.json" in upload["files"] and "a/slug_model.safetensors" in upload["files"]
    assert "Ada Byron, Bob Stone" in upload["card"]


def test_updating_a_card_keeps_what_the_user_wrote(saved):
    _, _, folder = saved
    first = model_card(folder / "a", "org/forget-ada")
    user = first.replace("---\n", "---\nlicense: mit\n", 1) + "\n## My notes\nKeep me.\n"
    (folder / "a" / "README.md").write_text(user)
    data = json.loads((folder / "a" / "slug_config.json").read_text())
    data["step"] = 0.987
    (folder / "a" / "slug_config.json").write_text(json.dumps(data))
    updated = model_card(folder / "a", "org/forget-ada")
    assert "license: mit" in updated and "## My notes\nKeep me." in updated
    assert "0.987" in updated and updated.count("hf_slug:begin") == 1


def test_malformed_card_gets_a_clear_error(saved):
    _, _, folder = saved
    (folder / "a" / "README.md").write_text("---\ntags: [unclosed\n---\nbody")
    with pytest.raises(HubError, match="malformed model card"):
        model_card(folder / "a")


def test_push_refuses_a_folder_without_a_delta(tmp_path, api):
    with pytest.raises(DeltaFormatError, match="holds no hf_slug delta"):
        push_to_hub(tmp_path, "org/empty")
    assert api.calls == []


def test_outputs_after_hub_round_trip_match(saved, tmp_path, processor):
    model, deltas, folder = saved
    cache = tmp_path / "hf_cache"
    cache_repo(cache, "org/forget-ada", files_of(folder / "a"), COMMIT_A)
    inputs = processor(text=["a photo"], images=random_images(1), return_tensors="pt", padding=True)
    local = SLUGModel.from_pretrained(copy.deepcopy(model), folder / "a")
    remote = SLUGModel.from_pretrained(copy.deepcopy(model), "org/forget-ada", cache_dir=cache)
    with torch.no_grad():
        assert torch.equal(local(**inputs).logits_per_image, remote(**inputs).logits_per_image)
