"""The audit report: one row per probe, edited beside original and reference; JSON, markdown, plot.

Example:
    >>> row = ProbeRow("name variant", "lower case", edited=0.0, original=1.0)
    >>> AuditReport("Ada Byron", "quick", [row]).worst("name variant")
    0.0
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import DeltaFormatError
from .io import atomic_path, write_json

AUDIT_NAME = "slug_audit.json"
AUDIT_TABLE = "slug_audit.md"
AUDIT_PLOT = "slug_audit.png"
STEP_FAMILIES = ("relearn (all weights)", "relearn (edited layers)")


@dataclass
class ProbeRow:
    """One probe's outcome. FA@1 in [0, 1]; for relearning, steps to FA@1 ≥ 50 % (None: never).

    `reference` is the same attack's outcome on a scale: for learned prompts and relearning, the
    original model learning a concept it never knew; for PGD, unrelated images pushed to the name.
    """

    family: str
    setting: str
    edited: float | None
    original: float | None
    reference: float | None = None

    @property
    def unit(self) -> str:
        return "steps" if self.family in STEP_FAMILIES else "FA@1"

    @property
    def probe_finds_concept_in_original(self) -> bool:
        """A probe is sound only if it recognises the concept in the original model."""
        if self.unit == "steps":
            return self.original is not None
        return self.original is not None and self.original >= 0.5


@dataclass
class AuditReport:
    """Every probe's row, the learned-prompt curves and the budget it ran with."""

    concept: str
    budget: str
    rows: list[ProbeRow]
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def worst(self, family: str) -> float | None:
        """The highest edited FA@1 over a family's rows (the attacker's best), or None."""
        values = [r.edited for r in self.rows if r.family == family and r.edited is not None]
        return max(values) if values else None

    def broken_probes(self) -> list[ProbeRow]:
        """Rows whose probe does not find the concept in the original (their numbers mean little)."""
        return [r for r in self.rows if not r.probe_finds_concept_in_original]

    def to_dict(self) -> dict[str, Any]:
        return {
            "concept": self.concept,
            "budget": self.budget,
            "seconds": round(self.seconds, 2),
            "settings": self.settings,
            "rows": [asdict(r) for r in self.rows],
            "curves": {k: [list(p) for p in v] for k, v in self.curves.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditReport:
        try:
            return cls(
                concept=str(data["concept"]),
                budget=str(data["budget"]),
                rows=[ProbeRow(**r) for r in data["rows"]],
                curves={k: [(int(s), float(v)) for s, v in c] for k, c in data["curves"].items()},
                settings=dict(data.get("settings", {})),
                seconds=float(data.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DeltaFormatError(
                f"the audit report is malformed ({error}); run hf-slug audit again."
            ) from error

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> AuditReport:
        """Read `slug_audit.json` from a delta folder."""
        path = Path(folder) / AUDIT_NAME
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DeltaFormatError(
                f"{path} cannot be read ({error}); run the audit again."
            ) from error

    def to_markdown(self) -> str:
        """A table: probe, setting, edited, original, reference (FA@1 in %, or steps)."""
        default = "held-out views whose top-1 name is the concept"
        measure = str((self.settings or {}).get("measure") or default).removeprefix("share of ")
        lines = [
            f"Audit of **{self.concept}** ({self.budget} budget, {self.seconds:.0f} s). FA@1 = share "
            f"of {measure}, in %; relearning = fine-tuning "
            "steps until FA@1 ≥ 50 % (`>N`: not within N).",
            "",
            "| probe | setting | edited | original | reference |",
            "|---|---|---|---|---|",
        ]
        limit = self.settings.get("relearn_max_steps")
        for r in self.rows:
            cells = [_cell(v, r.unit, limit) for v in (r.edited, r.original, r.reference)]
            lines.append(f"| {r.family} | {r.setting} | " + " | ".join(cells) + " |")
        broken = self.broken_probes()
        if broken:
            lines += [
                "",
                "Probes that do not find the concept in the original model (their rows carry "
                "little): " + ", ".join(f"{r.family}/{r.setting}" for r in broken) + ".",
            ]
        return "\n".join(lines) + "\n"

    def save(self, folder: str | Path, *, plot: bool = True) -> Path:
        """Write `slug_audit.json`, `slug_audit.md` (and `slug_audit.png`) into `folder`.

        All are written first and renamed into place only once each is complete, so a failure
        (a plot that cannot be drawn) leaves the previous audit's files as they were.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        figure = atomic_path(folder / AUDIT_PLOT) if plot else nullcontext(None)
        with (
            atomic_path(folder / AUDIT_NAME) as data,
            atomic_path(folder / AUDIT_TABLE) as table,
            figure as image,
        ):
            write_json(data, self.to_dict())
            table.write_text(self.to_markdown(), encoding="utf-8")
            if image is not None:
                self.plot(image)
        return folder

    def plot(self, path: str | Path) -> Path:
        """Recovery against attack budget: learned-prompt FA@1 by step; relearning steps by n."""
        from .plots import _pyplot, _save

        plt = _pyplot()
        fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
        for label, curve in self.curves.items():
            if curve:
                steps, values = zip(*curve)
                left.plot(steps, [100 * v for v in values], marker="o", label=label)
        left.set(xlabel="optimisation steps", ylabel="FA@1 of held-out views (%)", ylim=(-3, 103))
        left.set_title("learned prompt (concept inversion)")
        left.legend(fontsize=7)
        limit = self.settings.get("relearn_max_steps") or 1
        for column, marker in (("edited", "o"), ("reference", "s")):
            for family in STEP_FAMILIES:
                rows = [r for r in self.rows if r.family == family]
                if rows:
                    xs = [int(r.setting.split()[0]) for r in rows]
                    ys = [getattr(r, column) for r in rows]
                    ys = [limit + 1 if y is None else y for y in ys]
                    right.plot(xs, ys, marker=marker, label=f"{column}, {family}")
        sizes = sorted({int(r.setting.split()[0]) for r in self.rows if r.unit == "steps"})
        right.set(xscale="log", xlabel="forget images used", ylabel="steps to FA@1 ≥ 50 %")
        right.set_xticks(sizes or [1], [str(n) for n in sizes or [1]])
        right.minorticks_off()
        right.set_title("relearning (top: not reached)")
        right.legend(fontsize=6)
        fig.suptitle(f"audit of {self.concept}")
        return _save(fig, path)


def _cell(value: float | None, unit: str, limit: int | None) -> str:
    if unit == "steps":
        return f">{limit}" if value is None else str(int(value))
    return "–" if value is None else f"{100 * value:.1f}"
