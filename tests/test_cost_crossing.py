"""benchmarks/cost_crossing.py keeps working: its smoke mode (tiny random model, tiny sizes) writes
a JSON with every method at every point and no error, its markdown and its plot (no timing
assertions)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from test_benchmarks import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from cost_crossing import crossings, points  # noqa: E402


def _row(target: str, n_forget: int, n_retain: int, slug: float, ga: float) -> dict:
    def entry(cpu: float) -> dict:
        return {"cpu_s": cpu, "cpu_s_range": [cpu * 0.98, cpu * 1.02], "reached": True}

    return {
        "target": target,
        "n_forget": n_forget,
        "n_retain": n_retain,
        "SLUG": entry(slug),
        "GA": entry(ga),
        "SLUG/GA": slug / ga,
    }


def test_crossings_say_where_the_order_changes_and_where_it_does_not() -> None:
    report = {
        "settings": {
            "forget_sizes": [32, 64, 128],
            "retain_sizes": [256, 1024],
            "targets": ["A", "B"],
        },
        "points": points([32, 64, 128], [256, 1024]),
        "summary": [
            _row("A", 32, 256, 1.0, 2.0),  # cheaper
            _row("A", 64, 256, 2.0, 2.01),  # tied: the ranges overlap
            _row("A", 128, 256, 3.0, 2.0),  # dearer
            _row("A", 32, 1024, 4.0, 2.0),  # dearer
            *(_row("B", f, r, 5.0, 2.0) for f, r in points([32, 64, 128], [256, 1024])),
        ],
    }
    forget_a, forget_b, retain_a, retain_b = crossings(report, "GA")
    assert "from SLUG cheaper at 32 to tied at 64" in forget_a
    assert "from SLUG tied at 64 to dearer at 128 forget pairs" in forget_a
    assert "from SLUG cheaper at 256 to dearer at 1024 retain pairs" in retain_a
    for line in (forget_b, retain_b):
        assert "SLUG is dearer at every measured size: no crossing" in line


@pytest.mark.slow
def test_cost_crossing_smoke(tmp_path: Path) -> None:
    run_script("cost_crossing.py", tmp_path, tmp_path / "cache")
    report = json.loads((tmp_path / "cost_crossing_smoke.json").read_text())
    points = [tuple(p) for p in report["points"]]
    assert points == [(16, 32), (24, 32), (16, 48)]  # the forget axis, then the retain axis
    assert not [r for r in report["runs"] if "error" in r]
    done = {(r["method"], tuple(r["point"])) for r in report["runs"]}
    assert done == {(m, p) for m in ("SLUG", "GA", "GAFT") for p in points}
    for row in report["summary"]:
        for method in ("SLUG", "GA", "GAFT"):
            assert row[method]["cpu_s"] > 0
            assert row[method]["pairs_forward_backward"] > 0
            assert set(row[method]["test"]) == {"FA@1", "FA@5", "retain", "utility"}
        assert row["SLUG/GA"] > 0 and row["SLUG/GAFT"] > 0
    text = (tmp_path / "cost_crossing_smoke.md").read_text()
    assert "## Where the curves cross" in text and "SLUG/GA CPU" in text
    assert "## What every row shows" in text
    assert (tmp_path / "cost_crossing_smoke.png").stat().st_size > 0
