"""Issue 12, items 6-7: random JSON and random bytes never crash the config and stack-index
parsers with anything but hf_slug's own errors (property tests with hypothesis), and every
config field is checked on load and on construction (table-driven)."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import re
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from conftest import tiny_clip
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_adapters import make_delta

from hf_slug import (
    ConceptDelta,
    ConfigError,
    DeltaFormatError,
    SLUGConfig,
    SLUGError,
    UnlearningConfig,
)
from hf_slug.config import CONFIG_NAME, STACK_NAME, WEIGHTS_NAME
from hf_slug.hub import delta_configs
from hf_slug.model import SLUGModel

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FC1 = "vision_model.encoder.layers.0.mlp.fc1.weight"
SHA = "0" * 64

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["", ".", "..", "../x", "/abs", "a/b", "float32", "vision", SHA, FC1])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
targets = st.dictionaries(
    st.sampled_from([FC1, "", "x"]) | st.text(max_size=6),
    json_values
    | st.fixed_dictionaries(
        {"shape": json_values | st.just([64, 32]), "dtype": json_values, "sha256": json_values},
        optional={"tower": json_values},
    ),
    max_size=2,
)
configs = json_values | st.fixed_dictionaries(
    {"concept": json_values, "step": json_values, "targets": json_values | targets},
    optional={
        k: json_values
        for k in ("scales", "delta_format", "rank", "metrics", "settings", "caption_mode")
    },
)
entries = json_values | st.fixed_dictionaries(
    {"name": json_values}, optional={"weight": json_values, "active": json_values}
)
indexes = json_values | st.fixed_dictionaries({"adapters": json_values | st.lists(entries)})


def only_our_errors(call, *args):
    """Run `call(*args)`: success or an hf_slug error are fine, anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.suppress(SLUGError):
            return call(*args)
    return None


def finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def assert_valid_config(config: UnlearningConfig) -> None:
    """What a config that loaded must be: every field of the right type, finite, in range."""
    assert isinstance(config.concept, str) and config.concept.strip()
    assert finite(config.step) and config.step >= 0
    assert config.delta_format in ("dense", "lowrank") and config.caption_mode in (
        "original",
        "concept_name",
    )
    assert config.rank is None or (type(config.rank) is int and config.rank >= 1)
    assert isinstance(config.metrics, dict) and isinstance(config.settings, dict)
    assert all(finite(s) for s in config.scales.values())
    for info in config.targets.values():
        assert info.shape and all(type(d) is int and d >= 1 for d in info.shape)
        assert isinstance(getattr(torch, info.dtype), torch.dtype)
        assert isinstance(info.sha256, str) and len(info.sha256) == 64
        assert info.tower in (None, "vision", "text")
    again = UnlearningConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.targets == config.targets and again.concept == config.concept


@SETTINGS
@given(configs)
def test_config_parser_raises_only_slug_errors_or_gives_a_valid_config(data):
    config = only_our_errors(UnlearningConfig.from_dict, data)
    if config is not None:
        assert_valid_config(config)


@SETTINGS
@given(indexes)
def test_stack_index_parser_raises_only_slug_errors_or_gives_valid_entries(data):
    from hf_slug.names import ADAPTER_NAME_PATTERN, parse_stack_index

    entries = only_our_errors(parse_stack_index, data)
    for entry in entries or []:
        assert re.fullmatch(ADAPTER_NAME_PATTERN, entry.name)
        assert finite(entry.weight) and isinstance(entry.active, bool)
    names = [e.name.lower() for e in entries or []]
    assert len(names) == len(set(names))


def encoded(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


file_bytes = st.binary(max_size=64) | configs.map(encoded) | indexes.map(encoded)


@pytest.fixture(scope="module")
def good_delta():
    model = tiny_clip()
    return model, make_delta(model, "Ada Byron", [FC1], 0)


@pytest.fixture(scope="module")
def deltas(good_delta):
    return {"a": good_delta[1]}


@SETTINGS
@given(config=file_bytes, index=st.none() | file_bytes, weights=st.none() | st.binary(max_size=64))
def test_file_readers_raise_only_slug_errors(good_delta, config, index, weights):
    model, delta = good_delta
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "delta"
        delta.save_pretrained(folder)
        (folder / CONFIG_NAME).write_bytes(config)
        if weights is not None:
            (folder / WEIGHTS_NAME).write_bytes(weights)
        if index is not None:
            (folder / STACK_NAME).write_bytes(index)
            (folder / CONFIG_NAME).rename(folder / "stray.json")
        only_our_errors(ConceptDelta.from_pretrained, folder)
        only_our_errors(delta_configs, folder)
        slug = SLUGModel(model)
        try:
            only_our_errors(slug.load_adapter, folder)
        finally:
            slug.unload()


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, "0.5", True, None, [1.0], 10**400],
    ids=["nan", "inf", "string", "bool", "none", "list", "huge-int"],
)
def test_stack_weights_must_be_finite_numbers(value):
    from hf_slug.errors import ConfigError
    from hf_slug.names import parse_stack_index

    with pytest.raises(ConfigError, match="finite number"):
        parse_stack_index({"adapters": [{"name": "a", "weight": value}]})


# -- config fields, table-driven (issue 12, items 6-7) -------------------------------------------------------------------------
def _target(data: dict) -> dict:
    return next(iter(data["targets"].values()))


FIELDS = [
    ("concept_int", lambda d: d.update(concept=42), ConfigError),
    ("concept_empty", lambda d: d.update(concept=""), ConfigError),
    ("step_string", lambda d: d.update(step="abc"), ConfigError),
    ("step_negative", lambda d: d.update(step=-0.5), ConfigError),
    ("step_nan", lambda d: d.update(step=math.nan), ConfigError),
    ("step_inf", lambda d: d.update(step=math.inf), ConfigError),
    ("step_bool", lambda d: d.update(step=True), ConfigError),
    ("sha256_int", lambda d: _target(d).update(sha256=1234), ConfigError),
    ("sha256_short", lambda d: _target(d).update(sha256="abc"), ConfigError),
    ("shape_string", lambda d: _target(d).update(shape="64x32"), ConfigError),
    ("shape_zero", lambda d: _target(d).update(shape=[0, 32]), ConfigError),
    ("shape_bool", lambda d: _target(d).update(shape=[True, 32]), ConfigError),
    ("dtype_unknown", lambda d: _target(d).update(dtype="float99"), ConfigError),
    ("dtype_attribute", lambda d: _target(d).update(dtype="nn"), ConfigError),
    ("tower_unknown", lambda d: _target(d).update(tower="audio"), ConfigError),
    ("scale_string", lambda d: d.update(scales={FC1: "big"}), ConfigError),
    ("scale_nan", lambda d: d.update(scales={FC1: math.nan}), ConfigError),
    ("delta_format", lambda d: d.update(delta_format="sparse"), ConfigError),
    ("rank_zero", lambda d: d.update(rank=0), ConfigError),
    ("rank_string", lambda d: d.update(rank="2"), ConfigError),
    ("caption_mode", lambda d: d.update(caption_mode="shouting"), ConfigError),
    ("component_int", lambda d: d.update(component=5), ConfigError),
    ("metrics_list", lambda d: d.update(metrics=[1, 2]), ConfigError),
    ("settings_string", lambda d: d.update(settings="x"), ConfigError),
    ("metrics_deep", lambda d: d.update(metrics=json.loads("[" * 200 + "]" * 200)), ConfigError),
]


@pytest.mark.parametrize(("case", "damage", "error"), [pytest.param(*f, id=f[0]) for f in FIELDS])
def test_loaded_config_fields_are_validated(deltas, tmp_path, case, damage, error):
    deltas["a"].save_pretrained(tmp_path / "a")
    data = json.loads((tmp_path / "a" / CONFIG_NAME).read_text())
    damage(data)
    with pytest.raises(error):
        UnlearningConfig.from_dict(copy.deepcopy(data))
    (tmp_path / "a" / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(error, match="must be|deeper"):
        ConceptDelta.from_pretrained(tmp_path / "a")


RAW_CONFIGS = [
    pytest.param(b'{"concept": "\xff\xfe", "step": 1, "targets": {}}', id="not-utf8"),
    pytest.param(b'{"x":' * 100_000 + b"1" + b"}" * 100_000, id="deeply-nested"),
]


@pytest.mark.parametrize("raw", RAW_CONFIGS)
def test_unreadable_config_bytes_are_a_format_error(deltas, tmp_path, raw):
    deltas["a"].save_pretrained(tmp_path / "a")
    (tmp_path / "a" / CONFIG_NAME).write_bytes(raw)
    with pytest.raises(DeltaFormatError):
        ConceptDelta.from_pretrained(tmp_path / "a")


SLUG_CONFIGS = [
    ("concept_int", dict(concept=42)),
    ("concept_blank", dict(concept="  ")),
    ("layer_empty_list", dict(layer=[])),
    ("layer_empty_string", dict(layer="")),
    ("layer_not_a_name", dict(layer=["vision.L1.fc1", 3])),
    ("towers_empty", dict(towers=())),
    ("towers_unknown", dict(towers=("audio",))),
    ("towers_both_word", dict(towers="both")),
    ("group_unknown", dict(group="attention")),
    ("caption_mode", dict(caption_mode="shouting")),
    ("batch_size_zero", dict(batch_size=0)),
    ("batch_size_float", dict(batch_size=2.5)),
    ("batch_size_string", dict(batch_size="32")),
    ("initial_step_nan", dict(initial_step=math.nan)),
    ("initial_step_zero", dict(initial_step=0.0)),
    ("max_evaluations_zero", dict(max_evaluations=0)),
    ("forget_target_nan", dict(forget_target=math.nan)),
    ("forget_target_string", dict(forget_target="0")),
    ("utility_tolerance_negative", dict(utility_tolerance=-1.0)),
    ("utility_tolerance_inf", dict(utility_tolerance=math.inf)),
    ("top_k_zero", dict(top_k=0)),
    ("top_k_bool", dict(top_k=True)),
    ("labels_empty", dict(candidate_labels=[])),
    ("labels_string", dict(candidate_labels="Ada Byron")),
    ("labels_not_strings", dict(candidate_labels=["Ada Byron", 7])),
]


@pytest.mark.parametrize(("case", "kwargs"), [pytest.param(*c, id=c[0]) for c in SLUG_CONFIGS])
def test_slug_config_fields_are_checked_before_any_work(case, kwargs):
    with pytest.raises(ConfigError, match="must be|got"):
        SLUGConfig(**{"concept": "Ada Byron", **kwargs})


@pytest.mark.parametrize(
    ("component", "metrics", "expected"),
    [
        (None, {}, {"": 0.3}),
        ("text_encoder", {"components": "not a table"}, {"text_encoder": 0.3}),
        (
            "text_encoder+text_encoder_2",
            {"components": {"text_encoder": {"step": 0.2}, "text_encoder_2": {"step": 0.5}}},
            {"text_encoder": 0.2, "text_encoder_2": 0.5},
        ),
        (
            "text_encoder+text_encoder_2",
            {"components": {"text_encoder": {"step": "x"}, "text_encoder_2": {}}},
            {"text_encoder": None, "text_encoder_2": None},
        ),
    ],
    ids=["one-component", "damaged-table", "sdxl-two-steps", "bad-step-is-unknown"],
)
def test_component_steps_are_typed(component, metrics, expected):
    from hf_slug.config import UnlearningConfig

    config = UnlearningConfig("Ada Byron", 0.3, {}, component=component, metrics=metrics)
    assert config.component_steps == expected
