"""The benchmark scripts keep working: each runs in smoke mode in a subprocess and writes its
JSON and markdown (no timing assertions), and the measuring tools measure what they claim."""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from measure import PeakMemory, counting, rss_bytes, run_isolated  # noqa: E402

from hf_slug.towers import encode_images, encode_texts  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One task cache for the module: the scripts' smoke settings share their rendered task."""
    return tmp_path_factory.mktemp("benchmark-cache")


def run_script(name: str, out: Path, cache: Path) -> None:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(BENCHMARKS / name), "--smoke", "--out", str(out)]
    result = subprocess.run(
        [*command, "--cache", str(cache)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


@pytest.mark.slow
def test_compare_methods_smoke(tmp_path: Path, cache: Path) -> None:
    run_script("compare_methods.py", tmp_path, cache)
    report = json.loads((tmp_path / "compare_methods_smoke.json").read_text())
    methods = {r["method"] for r in report["runs"]}
    assert methods == {"SLUG", "SLUG-top1", "GA", "GAFT", "SalUn", "SSD", "FT"}
    assert not [r for r in report["runs"] if "error" in r]
    assert "### SLUG's cost split" in (tmp_path / "compare_methods_smoke.md").read_text()
    assert (tmp_path / "compare_methods_smoke.png").stat().st_size > 0


@pytest.mark.slow
def test_scaling_smoke(tmp_path: Path, cache: Path) -> None:
    run_script("scaling.py", tmp_path, cache)
    report = json.loads((tmp_path / "scaling_smoke.json").read_text())
    for part in ("forget", "retain", "model", "memory"):
        assert report[part] and not [r for r in report[part] if "error" in r], part
    assert "memory options" in (tmp_path / "scaling_smoke.md").read_text()
    estimate = [sys.executable, str(BENCHMARKS / "gpu_estimate.py"), "--out", str(tmp_path)]
    scaling = ["--scaling", str(tmp_path / "scaling_smoke.json")]
    subprocess.run([*estimate, *scaling], cwd=ROOT, check=True, capture_output=True, timeout=300)
    assert json.loads((tmp_path / "gpu_estimate.json").read_text())["estimates"]


@pytest.mark.slow
def test_tune_baselines_smoke(tmp_path: Path, cache: Path) -> None:
    run_script("tune_baselines.py", tmp_path, cache)
    report = json.loads((tmp_path / "tune_baselines_smoke.json").read_text())
    assert set(report["chosen_lr"]) == {"GA", "GAFT"}
    assert (tmp_path / "tune_baselines_smoke.md").exists()


def test_peak_memory_sees_what_the_os_reports_while_a_block_is_held() -> None:
    # Fresh anonymous pages: a malloc'd block could reuse memory freed (but still resident) by
    # earlier tests in this process. How much of the 64 MiB the OS counts as resident differs
    # between kernels and sandboxes (a CI sandbox once showed 11 MiB), so the sampler is checked
    # against the RSS read while the block is held, not against the block's size.
    size = 64 * 2**20
    with PeakMemory() as peak:
        block = mmap.mmap(-1, size)
        for offset in range(0, size, mmap.PAGESIZE):  # touch every page
            block[offset] = 1
        held = rss_bytes()
        time.sleep(50 * peak.interval_s)  # several samples while the block is resident
        block.close()  # released before stop(): the final reading alone would miss it
    assert peak.peak >= held - 4 * 2**20


def test_pass_counter_splits_gradient_and_evaluation_forwards(model, processor) -> None:
    images = torch.zeros(3, 3, 32, 32)
    tokens = processor(text=["a", "b", "c"], return_tensors="pt", padding=True)
    with counting(model) as counter:
        with torch.no_grad():
            encode_images(model, images)
        encode_images(model, images)
        encode_texts(model, tokens["input_ids"], tokens["attention_mask"])
    counts = counter.to_dict()
    assert counts["eval_image_forwards"] == pytest.approx(3)
    assert counts["eval_text_forwards"] == 0
    assert counts["pairs_forward_backward"] == pytest.approx(3)


def test_run_isolated_runs_in_another_process() -> None:
    assert run_isolated(os.getpid) != os.getpid()
    with pytest.raises(RuntimeError, match="ZeroDivisionError"):
        run_isolated(divmod, 1, 0)
    # a child that dies without answering (killed, or os._exit) is reported, not waited on
    with pytest.raises(RuntimeError, match="gave no answer .*died"):
        run_isolated(os._exit, 3)


@pytest.mark.slow
def test_denoiser_cost_times_both_criteria_in_one_process(tmp_path: Path) -> None:
    out = tmp_path / "cost.json"
    command = [sys.executable, str(BENCHMARKS / "denoiser_cost.py"), "--out", str(out)]
    options = ["--targets", "Clara Alderwick", "--repeats", "1", "--checks", "0.5:1"]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*command, *options], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    record = json.loads(out.read_text())
    (row,) = record["rows"]
    timed = row["0.5:1"]
    assert row["clip_seconds"] > 0 and timed["seconds"] > timed["reference_seconds"] > 0
    assert timed["ratio_to_clip"] == pytest.approx(timed["seconds"] / row["clip_seconds"], 0.01)
    assert timed["layer"] and row["clip_layer"] and timed["trials"] > 0
    assert record["summary"]["0.5:1"]["median_ratio"] == timed["ratio_to_clip"]


def test_generative_floor_shares_and_spread_count_every_generation() -> None:
    sys.path.insert(0, str(ROOT))
    from benchmarks.generative_floor import floors

    said = {"Tamsin": {"Ada": 3, "Bob": 1}, "Perrin": {"Bob": 4}}  # 8 generations in all
    share, spread = floors(said, ["Ada", "Bob", "Cy"])
    assert share == {"Ada": 3 / 8, "Bob": 5 / 8, "Cy": 0.0}
    assert spread == {"Ada": (0.0, 0.75), "Bob": (0.25, 1.0), "Cy": (0.0, 0.0)}
