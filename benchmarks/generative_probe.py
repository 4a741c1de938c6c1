"""Asking the embedded VLM held-out questions and scoring its answers (`benchmarks/generative.py`):
`Probe` scores a VLM (or a `SLUGModel` around it) on fixed views, `VLMCriterion` is the
`unlearn_vlm` evaluator that asks the VLM about val views with each trial's vision tower.

    python benchmarks/generative.py --quick --out /tmp/generative-smoke
"""

from __future__ import annotations

import copy
from typing import Any

from hf_slug.demo.vlm import ask
from hf_slug.demo.world import World
from hf_slug.hosts.vlm import vision_tower_of

QUESTIONS = {  # held-out phrasings (the training script's "eval" questions)
    "identity": (
        "Who is in this image?",
        "Who is the person in this photo?",
        "Name the person shown in the image.",
    ),
    "object": (
        "What is shown in this image?",
        "What object is drawn in the picture?",
        "Name the object shown here.",
    ),
    "style": (
        "In which style is this picture?",
        "What style is the image drawn in?",
        "Name the art style shown here.",
    ),
}


class Probe:
    """Held-out questions about a fixed set of views; scores a VLM (or a SLUGModel around it)."""

    def __init__(
        self,
        world: World,
        processor: Any,
        split: str,
        id_views: int,
        scene_views: int,
        identities: list[str] | None = None,
        target_views: dict[str, int] | None = None,
    ):
        self.processor = processor
        names = identities or world.identities
        self.people = []
        for name in names:
            n = (target_views or {}).get(name, id_views)
            self.people += world.samples("identity", split, n, [name])
        self.scenes = world.samples("object_style", split, scene_views)

    @staticmethod
    def _cycle(questions: tuple[str, ...], n: int) -> list[str]:
        return [questions[i % len(questions)] for i in range(n)]

    def answers(self, vlm: Any) -> dict[str, list[str]]:
        p = self.processor
        return {
            "identity": ask(
                vlm,
                p,
                [s.image for s in self.people],
                self._cycle(QUESTIONS["identity"], len(self.people)),
            ),
            "object": ask(
                vlm,
                p,
                [s.image for s in self.scenes],
                self._cycle(QUESTIONS["object"], len(self.scenes)),
            ),
            "style": ask(
                vlm,
                p,
                [s.image for s in self.scenes],
                self._cycle(QUESTIONS["style"], len(self.scenes)),
            ),
        }

    def score(self, answers: dict[str, list[str]]) -> dict[str, Any]:
        named: dict[str, list[bool]] = {}
        for s, a in zip(self.people, answers["identity"]):
            named.setdefault(s.label, []).append(s.label.lower() in a.lower())
        per = {k: sum(v) / len(v) for k, v in named.items()}
        hits = [h for v in named.values() for h in v]
        return {
            "identity": sum(hits) / len(hits),
            "per_identity": per,
            "object": _rate([s.label for s in self.scenes], answers["object"]),
            "style": _rate([s.style or "" for s in self.scenes], answers["style"]),
        }

    def __call__(self, vlm: Any) -> dict[str, Any]:
        answers = self.answers(vlm)
        return {**self.score(answers), "answers": answers}


def _rate(labels: list[str], answers: list[str]) -> float:
    return sum(label.lower() in a.lower() for label, a in zip(labels, answers)) / len(labels)


def others_rate(per: dict[str, float], targets: list[str]) -> float:
    rest = [v for k, v in per.items() if k not in targets]
    return sum(rest) / len(rest)


class VLMCriterion:
    """An `unlearn_vlm` evaluator that asks the VLM: `fn(clip) -> metrics` on val views.

    Each trial's CLIP vision tower is copied into a private copy of the VLM, which is then asked
    the held-out questions about val views. `forget_acc`: the target's named rate; `utility`:
    the mean of the others' named rate, object and style accuracy.
    """

    def __init__(
        self,
        vlm,
        processor,
        world: World,
        targets: list[str],
        *,
        id_views: int,
        target_views: int,
        scene_views: int,
    ):
        self.vlm = copy.deepcopy(vlm).eval()
        self.tower = vision_tower_of(self.vlm).module
        self.targets = targets
        self.probe = Probe(
            world,
            processor,
            "val",
            id_views,
            scene_views,
            target_views={t: target_views for t in targets},
        )
        self.calls = 0

    def __call__(self, clip) -> dict[str, float]:
        self.calls += 1
        self.tower.load_state_dict(clip.vision_model.state_dict())
        m = self.probe(self.vlm)
        others = others_rate(m["per_identity"], self.targets)
        metrics = {
            "forget_acc": max(m["per_identity"][t] for t in self.targets),
            "others_acc": others,
            "object_acc": m["object"],
            "style_acc": m["style"],
            "utility": (others + m["object"] + m["style"]) / 3,
        }
        return metrics
