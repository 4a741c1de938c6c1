"""Issue 12, items 2-4 and 6: names and paths, all-or-nothing saves, nothing non-finite, typed
config errors. Every case here failed (or loaded silently) before the fix. Table-driven."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_adapters import make_delta
from test_hub import COMMIT_A, COMMIT_B, cache_repo, files_of
from trust_fixtures import FC1, V_PROJ, base_fixture, two_deltas  # noqa: F401  (`base`)

from hf_slug import (
    AdapterError,
    AdapterNameError,
    ConceptDelta,
    ConfigError,
    DeltaFormatError,
    NonFiniteGradientError,
    SLUGError,
)
from hf_slug.config import CONFIG_NAME, STACK_NAME, WEIGHTS_NAME
from hf_slug.hub import delta_configs, model_card
from hf_slug.model import SLUGModel


@pytest.fixture(scope="module")
def deltas(base):
    return {
        **two_deltas(base),
        "victim": make_delta(base, "Victim", [FC1], 2),
    }


@pytest.fixture
def stack(base, deltas, tmp_path):
    """tmp/stack (adapters a, b) and a delta folder tmp/victim beside it."""
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"], weight=0.5)
    slug.save_pretrained(tmp_path / "stack")
    deltas["victim"].save_pretrained(tmp_path / "victim")
    return tmp_path / "stack"


def hidden_leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*"))


# -- 1. names and paths -----------------------------------------------------------------------
BAD_NAMES = [
    pytest.param("../x", id="parent"),
    pytest.param("/tmp/hf_slug_absolute", id="absolute"),
    pytest.param("", id="empty"),
    pytest.param(".", id="dot"),
    pytest.param("..", id="dotdot"),
    pytest.param("a/b", id="slash"),
    pytest.param("a\\b", id="backslash"),
    pytest.param(42, id="int"),
    pytest.param(None, id="none"),
    pytest.param(STACK_NAME, id="index-file-name"),
    pytest.param(".hidden", id="hidden"),
    pytest.param("x" * 129, id="too-long"),
    pytest.param("ada.", id="trailing-dot"),
    pytest.param("CON", id="windows-device"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_add_adapter_refuses_unsafe_names(base, deltas, name):
    slug = SLUGModel(copy.deepcopy(base))
    with pytest.raises(AdapterNameError, match="e.g."):
        slug.add_adapter(name, deltas["a"])
    assert slug.adapters == {}


NAME_OPERATIONS = {
    "load_adapter": lambda slug, folder: slug.load_adapter(folder / "a", adapter_name="../x"),
    "add_weighted_adapter": lambda slug, _: slug.add_weighted_adapter(["a"], [1.0], "../x"),
    "set_adapters": lambda slug, _: slug.set_adapters(["../x"]),
    "set_adapters_unhashable": lambda slug, _: slug.set_adapters([["a"]]),
    "delete_adapter": lambda slug, _: slug.delete_adapter("a/../a"),
    "save_selected": lambda slug, folder: slug.save_pretrained(folder / "s", ["../x"]),
}


@pytest.mark.parametrize("operation", list(NAME_OPERATIONS))
def test_every_entry_point_validates_names(base, deltas, tmp_path, operation):
    deltas["a"].save_pretrained(tmp_path / "a")
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("a", deltas["a"])
    with pytest.raises(AdapterNameError):
        NAME_OPERATIONS[operation](slug, tmp_path)
    assert list(slug.adapters) == ["a"] and not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["../escaped", ""], ids=["parent", "empty"])
def test_save_never_writes_outside_its_folder(base, deltas, tmp_path, name):
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("ok", deltas["a"])
    for table in (slug.adapters, slug.weights, slug.targets):  # state corrupted behind our back
        table[name] = table.pop("ok")
    slug._active = [name]
    with pytest.raises(AdapterNameError):
        slug.save_pretrained(tmp_path / "out" / "stack")
    assert not (tmp_path / "out" / "escaped").exists() and not (tmp_path / "out").exists()


def _index(stack: Path, data) -> None:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    (stack / STACK_NAME).write_bytes(raw)


CRAFTED = [
    ("parent", lambda s: [{"name": "../victim"}], AdapterNameError),
    ("dotdot", lambda s: [{"name": ".."}], AdapterNameError),
    ("absolute", lambda s: [{"name": str(s.parent / "victim")}], AdapterNameError),
    ("duplicate", lambda s: [{"name": "a"}, {"name": "a"}], ConfigError),
    ("weight_string", lambda s: [{"name": "a", "weight": "0.5"}], ConfigError),
    ("weight_bool", lambda s: [{"name": "a", "weight": True}], ConfigError),
    ("weight_nan", lambda s: [{"name": "a", "weight": math.nan}], ConfigError),
    ("weight_inf", lambda s: [{"name": "a", "weight": math.inf}], ConfigError),
    ("active_string", lambda s: [{"name": "a", "active": "false"}], ConfigError),
    ("entry_string", lambda s: ["a"], ConfigError),
    ("adapters_dict", lambda s: {"a": {"weight": 1.0}}, DeltaFormatError),
    ("adapters_empty", lambda s: [], DeltaFormatError),
]
RAW = [
    ("not_utf8", b'{"adapters": [{"name": "\xff\xfe"}]}', DeltaFormatError),
    ("deep", b"[" * 100_000 + b"]" * 100_000, DeltaFormatError),
]
READERS = {
    "load_adapter": lambda base, folder: SLUGModel(copy.deepcopy(base)).load_adapter(folder),
    "delta_configs": lambda base, folder: delta_configs(folder),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize(
    ("case", "adapters", "error"), [pytest.param(*c, id=c[0]) for c in CRAFTED + RAW]
)
def test_crafted_stack_indexes_are_refused(base, stack, reader, case, adapters, error):
    _index(stack, adapters if isinstance(adapters, bytes) else {"adapters": adapters(stack)})
    with pytest.raises(error):
        READERS[reader](base, stack)


@pytest.mark.parametrize("reader", list(READERS))
def test_a_symlinked_adapter_folder_is_not_followed(base, stack, reader):
    shutil.rmtree(stack / "a")
    (stack / "a").symlink_to(stack.parent / "victim", target_is_directory=True)
    with pytest.raises(DeltaFormatError, match="symbolic link"):
        READERS[reader](base, stack)


def test_a_crafted_index_in_the_hub_cache_cannot_reach_another_repo(base, stack, tmp_path):
    cache = tmp_path / "hf_cache"
    cache_repo(cache, "org/victim", files_of(tmp_path / "victim"), COMMIT_B)
    _index(stack, {"adapters": [{"name": f"../../../models--org--victim/snapshots/{COMMIT_B}"}]})
    cache_repo(cache, "org/stack", files_of(stack), COMMIT_A)
    with pytest.raises(AdapterNameError):
        SLUGModel.from_pretrained(copy.deepcopy(base), "org/stack", cache_dir=cache)


@pytest.mark.parametrize("hub", [False, True], ids=["local", "hub"])
def test_subfolder_cannot_leave_the_folder(base, stack, tmp_path, hub):
    subfolder, source, kwargs = "../victim", stack, {}
    if hub:
        cache = tmp_path / "hf_cache"
        cache_repo(cache, "org/victim", files_of(tmp_path / "victim"), COMMIT_B)
        cache_repo(cache, "org/stack", files_of(stack), COMMIT_A)
        subfolder = f"../../../models--org--victim/snapshots/{COMMIT_B}"
        source, kwargs = "org/stack", {"cache_dir": cache}
    with pytest.raises(DeltaFormatError, match="inside"):
        SLUGModel.from_pretrained(copy.deepcopy(base), source, subfolder=subfolder, **kwargs)


FOLDER_READERS = {
    **READERS,
    "ConceptDelta": lambda base, folder: ConceptDelta.from_pretrained(folder),
}


@pytest.mark.parametrize("reader", list(FOLDER_READERS))
def test_a_folder_holding_a_delta_and_a_stack_is_refused(base, stack, reader):
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        shutil.copy(stack / "a" / name, stack / name)
    with pytest.raises(DeltaFormatError, match=f"delete {STACK_NAME}"):
        FOLDER_READERS[reader](base, stack)


@pytest.mark.parametrize("first", ["delta", "stack"], ids=["stack-over-delta", "delta-over-stack"])
def test_a_save_replaces_the_other_layout_and_keeps_user_files(base, deltas, tmp_path, first):
    folder = tmp_path / "folder"
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("a", deltas["a"])
    slug.add_adapter("b", deltas["b"])
    saves = {"delta": lambda: deltas["a"].save_pretrained(folder), "stack": lambda: None}
    saves["stack"] = lambda: slug.save_pretrained(folder)
    saves[first]()
    (folder / "README.md").write_text("my notes")
    (folder / "images").mkdir()
    (folder / "images" / "x.txt").write_text("mine")
    deltas["b"].save_pretrained(folder / "kept")  # a delta folder the index does not list
    second = "stack" if first == "delta" else "delta"
    saves[second]()
    names = SLUGModel(copy.deepcopy(base)).load_adapter(folder)
    assert names == {"stack": ["a", "b"], "delta": ["ada_byron"]}[second]
    gone = {"stack": [CONFIG_NAME, WEIGHTS_NAME], "delta": [STACK_NAME, "a", "b"]}[second]
    assert not any((folder / name).exists() for name in gone)
    assert (folder / "README.md").read_text() == "my notes"
    assert (folder / "images" / "x.txt").read_text() == "mine"
    assert ConceptDelta.from_pretrained(folder / "kept").config.concept == "Bob Stone"


# -- 2. all-or-nothing saves --------------------------------------------------------------------
def _fill(delta: ConceptDelta, concept: str, value: float) -> ConceptDelta:
    config = copy.deepcopy(delta.config)
    config.concept = concept
    return ConceptDelta(config, {k: torch.full_like(v, value) for k, v in delta.tensors.items()})


def _values(delta: ConceptDelta) -> set[float]:
    return {round(float(t.flatten()[0]), 6) for t in delta.tensors.values()}


def test_a_stack_save_failing_on_its_second_adapter_keeps_the_old_stack(
    base, deltas, tmp_path, monkeypatch
):
    import safetensors.torch

    def stack_of(value):
        slug = SLUGModel(copy.deepcopy(base))
        slug.add_adapter("a", _fill(deltas["a"], f"a{value}", value))
        slug.add_adapter("b", _fill(deltas["b"], f"b{value}", value))
        return slug

    stack_of(1.0).save_pretrained(tmp_path / "stack")
    real, calls = safetensors.torch.save_file, []

    def writer(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", writer)
    monkeypatch.setattr("hf_slug.delta.save_file", writer, raising=False)
    with pytest.raises(OSError, match="disk full"):
        stack_of(2.0).save_pretrained(tmp_path / "stack")
    monkeypatch.undo()
    loaded = SLUGModel(copy.deepcopy(base))
    loaded.load_adapter(tmp_path / "stack")
    assert {n: _values(d) for n, d in loaded.adapters.items()} == {"a": {1.0}, "b": {1.0}}
    assert hidden_leftovers(tmp_path) == []


def test_a_failed_rename_never_leaves_a_torn_delta(deltas, tmp_path, monkeypatch):
    """The third rename of a save fails: before the fix, the config was already replaced."""
    fail_at, folder = 3, tmp_path / "a"
    _fill(deltas["a"], "old", 1.0).save_pretrained(folder)
    calls = []

    def failing(real):
        def rename(*args, **kwargs):
            calls.append(args)
            if len(calls) == fail_at:
                raise OSError("killed")
            return real(*args, **kwargs)

        return rename

    monkeypatch.setattr(os, "replace", failing(os.replace))
    monkeypatch.setattr(os, "rename", failing(os.rename))
    with pytest.raises(OSError, match="killed"):
        _fill(deltas["a"], "new", 2.0).save_pretrained(folder)
    monkeypatch.undo()
    loaded = ConceptDelta.from_pretrained(folder)
    assert (loaded.config.concept, _values(loaded)) == ("old", {1.0})
    assert hidden_leftovers(tmp_path) == []


def test_leftovers_of_killed_saves_are_removed_by_the_next_save(deltas, tmp_path):
    folder = tmp_path / "a"
    deltas["a"].save_pretrained(folder)
    dead = [tmp_path / ".a.tmp-999999999-dead", tmp_path / ".a.old-999999999-dead"]
    for path in dead:
        path.mkdir()
        (path / WEIGHTS_NAME).write_bytes(b"\0" * 1024)
    (folder / f".{WEIGHTS_NAME}.k1ll3d.tmp").write_bytes(b"\0" * 1024)  # an older hf_slug's
    live = tmp_path / f".a.tmp-{os.getppid()}-live"  # a save still running elsewhere
    other = tmp_path / ".b.tmp-999999999-dead"  # another folder's
    live.mkdir()
    other.mkdir()
    deltas["b"].save_pretrained(folder)
    assert not any(p.exists() for p in dead) and live.exists() and other.exists()
    assert hidden_leftovers(folder) == []


def _race(write, read, iterations: int) -> tuple[int, list[str]]:
    """Run `write(i)` `iterations` times in a thread while `read()` loops; return reads, torn."""
    done, errors = threading.Event(), []

    def writer():
        try:
            for i in range(iterations):
                write(i)
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads, torn, after = 0, [], 0
    while not done.is_set() or (reads == 0 and after < 20):
        after += done.is_set()
        try:
            problem = read()
        except DeltaFormatError:
            continue  # the folder briefly missing: a typed error, not a torn read
        reads += 1
        if problem:
            torn.append(problem)
    thread.join()
    assert not errors, errors
    return reads, torn


def test_a_concurrent_reader_never_sees_a_torn_delta(deltas, tmp_path):
    folder = tmp_path / "a"
    versions = [_fill(deltas["a"], "one", 1.0), _fill(deltas["a"], "two", 2.0)]
    versions[0].save_pretrained(folder)

    def read():
        delta = ConceptDelta.from_pretrained(folder)
        want = {"one": {1.0}, "two": {2.0}}[delta.config.concept]
        return None if _values(delta) == want else f"{delta.config.concept}: {_values(delta)}"

    reads, torn = _race(lambda i: versions[i % 2].save_pretrained(folder), read, 200)
    assert reads > 0 and torn == []


def test_a_concurrent_reader_never_sees_a_mixed_stack(base, deltas, tmp_path):
    folder = tmp_path / "stack"
    stacks = []
    for value in (1.0, 2.0):
        slug = SLUGModel(copy.deepcopy(base))
        slug.add_adapter("a", _fill(deltas["a"], f"a{value}", value))
        slug.add_adapter("b", _fill(deltas["b"], f"b{value}", value))
        stacks.append(slug)
    stacks[0].save_pretrained(folder)
    model = copy.deepcopy(base)

    def read():
        slug = SLUGModel(model)
        try:
            slug.load_adapter(folder, check_fingerprint=False)
            seen = {v for d in slug.adapters.values() for v in _values(d)}
        finally:
            slug.unload()
        return None if len(seen) == 1 else f"mixed stack {seen}"

    reads, torn = _race(lambda i: stacks[i % 2].save_pretrained(folder), read, 80)
    assert reads > 0 and torn == []


# -- 3. nothing non-finite ----------------------------------------------------------------------
def _poison(folder: Path, value: float) -> None:
    tensors = load_file(str(folder / WEIGHTS_NAME))
    for tensor in tensors.values():
        tensor[0, 0] = value
    save_file(tensors, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


NON_FINITE = [pytest.param(v, id=i) for v, i in ((math.nan, "nan"), (math.inf, "inf"))]
FILE_LOADERS = {
    "ConceptDelta.from_pretrained": lambda base, folder, cache: ConceptDelta.from_pretrained(
        folder / "a"
    ),
    "load_adapter": lambda base, folder, cache: SLUGModel(base).load_adapter(folder / "a"),
    "stack": lambda base, folder, cache: SLUGModel.from_pretrained(base, folder),
    "hub": lambda base, folder, cache: SLUGModel.from_pretrained(
        base, "org/poisoned", cache_dir=cache
    ),
}


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("loader", list(FILE_LOADERS))
def test_non_finite_delta_files_are_refused(base, stack, tmp_path, loader, value):
    _poison(stack / "a", value)
    cache = tmp_path / "hf_cache"
    cache_repo(cache, "org/poisoned", files_of(stack / "a"), COMMIT_A)
    model = copy.deepcopy(base)
    with pytest.raises(NonFiniteGradientError, match="NaN/inf"):
        FILE_LOADERS[loader](model, stack, cache)
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(base.named_parameters())[name]), name


def _corrupt(slug: SLUGModel) -> SLUGModel:
    next(iter(slug.adapters["a"].tensors.values()))[0, 0] = math.nan
    return slug


IN_MEMORY = {
    "add_nan_delta": (lambda s, d: s.add_adapter("n", _fill(d, "n", math.nan)), None),
    "add_nan_weight": (lambda s, d: s.add_adapter("n", d, math.nan), None),
    "add_string_weight": (lambda s, d: s.add_adapter("n", d, "0.5"), AdapterError),
    "add_overflowing_weight": (lambda s, d: s.add_adapter("n", d, 1e308), None),
    "load_inf_weight": (lambda s, d: s.load_adapter(d.folder, weight=math.inf), None),
    "set_nan_weight": (lambda s, d: s.set_adapters(["a"], [math.nan]), None),
    "set_string_weight": (lambda s, d: s.set_adapters(["a"], ["0.5"]), AdapterError),
    "set_bool_weight": (lambda s, d: s.set_adapters(["a"], True), AdapterError),
    "weighted_inf": (lambda s, d: s.add_weighted_adapter(["a"], [math.inf], "w"), None),
    "merge_adapter": (lambda s, d: _corrupt(s).merge_adapter(), None),
    "fuse": (lambda s, d: _corrupt(s).fuse(), None),
    "merge_and_unload": (lambda s, d: _corrupt(s).merge_and_unload(), None),
    "to_peft_lora": (lambda s, d: _corrupt(s).to_peft_lora(d.folder.parent / "lora"), None),
}


@pytest.mark.parametrize("case", list(IN_MEMORY))
def test_non_finite_deltas_and_weights_are_refused(base, deltas, tmp_path, case):
    operation, error = IN_MEMORY[case]
    delta = copy.deepcopy(deltas["b"])
    delta.folder = tmp_path / "b"
    delta.save_pretrained(delta.folder)
    slug = SLUGModel(copy.deepcopy(base))
    slug.add_adapter("a", copy.deepcopy(deltas["a"]))
    with pytest.raises(error or NonFiniteGradientError):
        operation(slug, delta)
    assert list(slug.adapters) in (["a"], [])
    with slug.disable_adapters():
        for name, p in slug.model.named_parameters():
            assert torch.isfinite(p).all() and torch.equal(p, dict(base.named_parameters())[name])


def test_export_refuses_a_non_finite_delta(tmp_path):
    from hf_slug.export import export_peft_lora

    with pytest.raises(NonFiniteGradientError, match="refusing to export"):
        export_peft_lora({FC1: torch.full((4, 3), math.inf)}, tmp_path / "lora")
    assert not (tmp_path / "lora").exists()


# -- 4. delta files and cards ------------------------------------------------------------------
LOW_RANK_DAMAGE = {
    "inner_mismatch": lambda t, k: t.update(
        {k + ".down": torch.zeros(t[k + ".up"].shape[1] + 1, t[k + ".down"].shape[1])}
    ),
    "missing_down": lambda t, k: t.pop(k + ".down"),
    "three_dimensional": lambda t, k: t.update({k + ".up": t[k + ".up"][None]}),
    "integer_tensor": lambda t, k: t.update({k + ".up": t[k + ".up"].to(torch.int64)}),
}


@pytest.mark.parametrize("damage", list(LOW_RANK_DAMAGE))
def test_damaged_low_rank_factors_are_a_format_error(deltas, tmp_path, damage):
    lowrank, _ = deltas["b"].to_lowrank(2)
    lowrank.save_pretrained(tmp_path / "lr")
    tensors = load_file(str(tmp_path / "lr" / WEIGHTS_NAME))
    LOW_RANK_DAMAGE[damage](tensors, V_PROJ)
    save_file(tensors, str(tmp_path / "lr" / WEIGHTS_NAME))
    with pytest.raises(DeltaFormatError, match="save it again"):
        ConceptDelta.from_pretrained(tmp_path / "lr")


def test_a_model_card_renders_whatever_metrics_a_config_holds(deltas, tmp_path):
    delta = copy.deepcopy(deltas["a"])
    delta.config.metrics = {
        "before": {"acc": "high", "n": None},
        "after": {"acc": math.nan},
        "components": {"x": 1, "y": {"step": "s"}},
    }
    delta.save_pretrained(tmp_path / "a")
    card = model_card(tmp_path / "a")
    assert "| acc | high | nan |" in card and "x: —, y: —" in card


def test_an_fp16_base_is_refused_naming_the_dtype(base, deltas):
    with pytest.raises(SLUGError, match=r"holds float16.*float32.*torch_dtype=torch\.float32"):
        SLUGModel(copy.deepcopy(base).half()).add_adapter("a", deltas["a"])
