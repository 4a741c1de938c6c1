"""The benchmarks' figures (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {
    "SLUG": "#d62728",
    "SLUG-top1": "#e377c2",
    "GA": "#1f77b4",
    "GAFT": "#2ca02c",
    "SalUn": "#9467bd",
    "SSD": "#ff7f0e",
    "FT": "#7f7f7f",
    "MaskGAFT": "#17becf",
}


def plot_comparison_seeds(report: dict[str, Any], path: Path) -> Path:
    """compare_methods' summary: mean CPU s per method and target (bars: min–max over seeds),
    and the mean test retain/utility change against the mean CPU s (bars: min–max)."""
    summary = report["summary"]
    targets = list(summary)
    methods = list(
        dict.fromkeys(m for part in summary.values() for m in part["methods"] if m != "original")
    )
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    width = 0.8 / max(1, len(methods))
    for j, method in enumerate(methods):
        for i, target in enumerate(targets):
            row = summary[target]["methods"].get(method)
            if row is None:
                continue
            cpu = row["cpu_s"]
            x = i + (j - (len(methods) - 1) / 2) * width
            bar = axes[0].bar(
                x,
                cpu["mean"],
                width,
                color=COLOURS.get(method),
                label=method if i == 0 else None,
                yerr=[[cpu["mean"] - cpu["min"]], [cpu["max"] - cpu["mean"]]],
                error_kw={"lw": 0.8},
            )
            if row["reached"] < len(row["seeds"]):
                bar[0].set_hatch("//")
    axes[0].set_yscale("log")
    axes[0].set_xticks(range(len(targets)), targets, rotation=15)
    axes[0].set_ylabel("process CPU s (log)")
    axes[0].set_title("CPU time to the target (hatched: missed in some seed)")
    axes[0].legend(fontsize=8)
    markers = {"identity": "o", "style": "s", "object": "^"}
    for ax, key in ((axes[1], "retain"), (axes[2], "utility")):
        for method in methods:
            for target in targets:
                part = summary[target]
                row, original = part["methods"].get(method), part["methods"].get("original")
                if row is None or original is None:
                    continue
                base = original[key]["mean"]
                ax.errorbar(
                    row["cpu_s"]["mean"],
                    row[key]["mean"] - base,
                    yerr=[
                        [row[key]["mean"] - row[key]["min"]],
                        [row[key]["max"] - row[key]["mean"]],
                    ],
                    fmt=markers.get(part["kind"], "o"),
                    color=COLOURS.get(method),
                    label=method if target == targets[0] else None,
                    ms=6,
                    lw=0.8,
                )
        ax.axhline(0, color="k", lw=0.5, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("process CPU s (log)")
        ax.set_ylabel(f"test {key}: after − original (points)")
        ax.set_title(f"{key} change, mean [min–max] (o identity, □ style, △ object)")
    for ax in axes:
        _plain_log_ticks(ax)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plain_log_ticks(ax: Any) -> None:
    """Plain numbers (2, 5, 10, …) on log axes instead of 2×10⁰."""
    from matplotlib.ticker import FuncFormatter

    formatter = FuncFormatter(lambda value, _: f"{value:g}")
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_major_formatter(formatter)
            axis.set_minor_formatter(formatter)


def plot_scaling(report: dict[str, Any], path: Path) -> Path:
    """SLUG's time by phase and peak memory against forget, retain and model size."""
    parts = [p for p in ("forget", "retain", "model") if report.get(p)]
    fig, axes = plt.subplots(2, max(1, len(parts)), figsize=(5.5 * max(1, len(parts)), 8))
    axes = axes.reshape(2, -1)
    labels = {
        "forget": "forget pairs",
        "retain": "retain pairs",
        "model": "parameters (millions)",
    }
    for col, part in enumerate(parts):
        rows = [r for r in report[part] if "error" not in r]
        xs = [r["x"] for r in rows]
        ax = axes[0, col]
        for phase in ("forget_gradients", "retain_gradients", "metrics", "search", "total"):
            ax.plot(xs, [r["timings_s"][phase] for r in rows], marker="o", label=phase)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels[part])
        ax.set_ylabel("seconds (log)")
        ax.set_title(f"SLUG time vs {labels[part]}")
        ax.legend(fontsize=8)
        ax = axes[1, col]
        ax.plot(xs, [r["memory"]["peak_above_baseline_mb"] for r in rows], marker="o")
        ax.set_xscale("log")
        ax.set_xlabel(labels[part])
        ax.set_ylabel("peak RSS above loaded model (MB)")
        ax.set_title(f"SLUG peak memory vs {labels[part]}")
        for ax in axes[:, col]:
            _plain_log_ticks(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_memory_options(rows: list[dict[str, Any]], path: Path) -> Path:
    """Peak memory and time of the gradient computation per model size and memory option."""
    rows = [r for r in rows if "error" not in r and "skipped" not in r]
    models = list(dict.fromkeys(r["size"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.8))
    width = 0.8 / max(1, len(variants))
    for j, variant in enumerate(variants):
        for ax, key in ((axes[0], "peak_gb"), (axes[1], "seconds")):
            xs, ys = [], []
            for i, model in enumerate(models):
                run = next(
                    (r for r in rows if r["size"] == model and r["variant"] == variant), None
                )
                if run is None:
                    continue
                xs.append(i + (j - (len(variants) - 1) / 2) * width)
                ys.append(run[key])
            ax.bar(xs, ys, width, label=variant)
    for ax, label in ((axes[0], "peak RSS above the model (GB)"), (axes[1], "seconds")):
        ax.set_xticks(range(len(models)), models)
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    axes[0].set_title("gradient computation: peak memory")
    axes[1].set_title("gradient computation: time")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
