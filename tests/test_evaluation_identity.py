"""`identity_tasks`: the identity table's tasks, built from (image, name) views of any source.

The demo protocol's `identity_evaluator` builds the same tasks from the embedded world; this
checks the shared builder gives them (names, order, images, labels, prompts, utility) so that
either can call the other.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_images

from hf_slug.demo.protocol import identity_evaluator, utility_tasks
from hf_slug.demo.world import World
from hf_slug.evaluation import (
    FORGET_TASK,
    RETAIN_TASK,
    ZeroShotEvaluator,
    accuracy_key,
    identity_tasks,
    target_task,
)

NAMES = ["Ada Byron", "Bob Stone", "Cy Young"]


def _shape(task) -> tuple:
    images = [np.asarray(image).tobytes() for image in task.images]
    prompts = {k: list(v) for k, v in task.prompts.items()}
    return task.name, images, list(task.labels), list(task.label_names), prompts, task.in_utility


@pytest.mark.parametrize("targets", ["Grace Hopper", ["Grace Hopper", "Eileen Collins"]])
def test_identity_tasks_are_the_demo_protocols(processor, targets):
    world = World(seed=0)
    demo = identity_evaluator(world, processor, targets, "val", per_identity=2, per_concept=1)
    chosen = [targets] if isinstance(targets, str) else targets
    forget = world.samples("identity", "val", 2, chosen)
    others = [n for n in world.identities if n not in chosen]
    retain = world.samples("identity", "val", 1, others)
    views = [(s.image, s.label) for s in forget + retain]
    utility = utility_tasks(world, "val", 1)
    tasks = identity_tasks(views, world.identities, targets, utility=utility)
    assert [_shape(t) for t in tasks] == [_shape(t) for t in demo.tasks]


def test_identity_tasks_name_each_target_and_keep_them_out_of_utility(model, processor):
    images = random_images(6, seed=2)
    views = list(zip(images, ["Ada Byron", "Bob Stone", "Cy Young"] * 2))
    tasks = identity_tasks(views, NAMES, ["Ada Byron", "Cy Young"])
    assert [t.name for t in tasks] == [
        FORGET_TASK,
        RETAIN_TASK,
        target_task("Ada Byron"),
        target_task("Cy Young"),
    ]
    assert [len(t.images) for t in tasks] == [4, 2, 2, 2]
    assert [t.in_utility for t in tasks] == [False, True, False, False]
    assert tasks[0].prompts == {n: [f"{n}."] for n in NAMES}
    metrics = ZeroShotEvaluator(processor, tasks)(model)
    assert metrics["utility"] == metrics[accuracy_key(RETAIN_TASK)]
    assert accuracy_key(target_task("Cy Young")) in metrics
