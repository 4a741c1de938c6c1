"""The embedded default: a deterministic world, shipped weights that reach the model card's
accuracies, and the demo end to end in its reduced setting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_slug import ConceptDelta
from hf_slug.demo.protocol import utility_tasks
from hf_slug.demo.run import load_embedded, run_demo
from hf_slug.demo.world import World
from hf_slug.evaluation import ZeroShotEvaluator, ZeroShotTask


def pixels(samples) -> list[bytes]:
    return [np.asarray(s.image).tobytes() for s in samples]


def test_world_is_deterministic_and_prefix_stable():
    names = World(0).identities[:2] + ["Grace Hopper"]
    first = World(seed=0).samples("identity", "val", 3, names)
    again = World(seed=0).samples("identity", "val", 3, names)
    assert pixels(first) == pixels(again)
    assert [s.caption for s in first] == [s.caption for s in again]
    longer = World(seed=0).samples("identity", "val", 5, names[:1])
    assert pixels(longer)[:3] == pixels(first)[:3]  # more views keep the first ones
    other_seed = World(seed=1).samples("identity", "val", 3, names)
    assert pixels(other_seed) != pixels(first)
    test = World(seed=0).samples("identity", "test", 3, names)
    assert not set(pixels(test)) & set(pixels(first))  # splits never share a view


def test_world_has_the_issue_sized_concepts():
    world = World(0)
    assert len(world.identities) >= 20 and {"Grace Hopper", "Eileen Collins"} <= set(
        world.identities
    )
    assert len(world.objects) >= 10 and len(world.styles) >= 8 and len(world.digits) == 10


@pytest.fixture(scope="module")
def embedded():
    return load_embedded()


# a fixed subset of held-out test views; floors from the issue (the card states higher numbers)
FLOORS = {"identity": 0.80, "object": 0.80, "style": 0.70, "digit": 0.80}


@pytest.mark.numerics
def test_shipped_weights_reach_the_stated_accuracies(embedded):
    model, processor = embedded
    world = World(0)
    faces = world.samples("identity", "test", 4)
    prompts = {n: [f"{n}."] for n in world.identities}
    tasks = [
        ZeroShotTask(
            "identity",
            [s.image for s in faces],
            [s.label for s in faces],
            world.identities,
            prompts=prompts,
        ),
        *utility_tasks(world, "test", per_concept=4),
    ]
    metrics = ZeroShotEvaluator(processor, tasks)(model)
    for task, floor in FLOORS.items():
        assert metrics[f"{task}_acc"] >= floor, (task, metrics)


@pytest.mark.numerics
def test_demo_runs_end_to_end_in_its_quick_setting(tmp_path):
    measured = run_demo(tmp_path, quick=True)
    first, second = measured["targets"]
    for target in (first, second):
        assert measured[target]["before"]["FA@1"] == 100.0
        assert measured[target]["after"]["FA@1"] < 50.0, measured[target]
        folder = tmp_path / "deltas" / target.lower().replace(" ", "_")
        assert ConceptDelta.from_pretrained(folder).config.concept == target
        assert (folder / "pareto.png").stat().st_size > 10_000
    stack = measured["stack"]
    tuned = next(row for name, row in stack.items() if name.startswith("stack-tuned"))
    assert tuned[f"FA@1 {first.split()[-1]}"] < stack["original"][f"FA@1 {first.split()[-1]}"]
    assert tuned[f"FA@1 {second.split()[-1]}"] < stack["original"][f"FA@1 {second.split()[-1]}"]
    assert (tmp_path / "similarity.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "demo_report.json").read_text())
    assert report["targets"] == [first, second]
