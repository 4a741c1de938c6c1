"""Measuring tools for the benchmarks: peak memory, pass counts, activation bytes, child processes.

* `PeakMemory` — peak resident memory of this process above a baseline, from the kernel's
  high-water mark (`VmHWM`, reset through `/proc/self/clear_refs`) and a background thread that
  samples the RSS (psutil, else `/proc/self/status`) every few milliseconds; the larger wins.
* `PassCounter` — image–text pairs through forward and backward, and evaluation forwards of
  images and texts, counted by hooks on every encoder block (a block's call adds batch/blocks, so
  a forward that starts above cached lower blocks counts as the fraction of the tower it ran).
* `activation_bytes` — bytes autograd saves for the backward of one batch.
* `run_isolated` — run a function in a fresh `spawn`ed process (OpenMP is not fork-safe) so
  peaks of different methods never mix.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn

try:  # psutil is optional: /proc/self/status gives the same numbers on Linux
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None

MB = 1024**2
GB = 1024**3


def quiet_threads(threads: int = 2) -> None:
    """Passive OpenMP waiting and a fixed thread count: the machine's cores are shared."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)


# -- memory ------------------------------------------------------------------------------------
def _status_kb(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """The resident set size of this process now."""
    if psutil is not None:
        return int(psutil.Process().memory_info().rss)
    return _status_kb("VmRSS") or 0


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak-RSS counter (`VmHWM`) to the current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


class PeakMemory:
    """Peak RSS of this process between `start()` and `stop()`, above the RSS at `start()`.

    Example:
        >>> with PeakMemory() as peak:  # doctest: +SKIP
        ...     run_method()
        >>> peak.peak_above_baseline / 2**20  # MiB
    """

    def __init__(self, interval_s: float = 0.002):
        self.interval_s = interval_s
        self.baseline = 0
        self.sampled_peak = 0
        self.kernel_peak: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PeakMemory:
        self.baseline = rss_bytes()
        self.sampled_peak = self.baseline
        self._kernel = _reset_high_water_mark()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.sampled_peak = max(self.sampled_peak, rss_bytes())
            time.sleep(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sampled_peak = max(self.sampled_peak, rss_bytes())
        self.kernel_peak = _status_kb("VmHWM") if self._kernel else None

    @property
    def peak(self) -> int:
        return max(self.sampled_peak, self.kernel_peak or 0)

    @property
    def peak_above_baseline(self) -> int:
        return self.peak - self.baseline

    def to_dict(self) -> dict[str, float]:
        return {
            "baseline_rss_mb": self.baseline / MB,
            "peak_rss_mb": self.peak / MB,
            "peak_above_baseline_mb": self.peak_above_baseline / MB,
            "sampled_peak_above_baseline_mb": (self.sampled_peak - self.baseline) / MB,
        }

    def __enter__(self) -> PeakMemory:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- pass counting -----------------------------------------------------------------------------
@dataclass
class PassCounter:
    """Counts forward work per tower, split into gradient forwards and evaluation forwards.

    A forward under `torch.is_grad_enabled()` is a gradient forward (the benchmarks backward
    every one of them); a forward under `no_grad` is an evaluation forward. Counts are in full
    tower passes of one example: a block call on a batch of b adds b / (blocks in the tower).
    """

    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _handles: list[Any] = field(default_factory=list)

    def attach(self, model: nn.Module) -> PassCounter:
        from hf_slug.towers import find_towers

        for tower in find_towers(model):
            n_blocks = len(tower.layers)
            for block in tower.layers:
                hook = partial(self._hook, tower.kind, n_blocks)
                self._handles.append(block.register_forward_hook(hook))
        return self

    def _hook(self, kind: str, n_blocks: int, module: nn.Module, args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        phase = "grad" if torch.is_grad_enabled() else "eval"
        self.counts[f"{phase}_{kind}"] += hidden.shape[0] / n_blocks

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def reset(self) -> None:
        self.counts.clear()

    def to_dict(self) -> dict[str, float]:
        """`pairs_forward_backward` (image–text pairs through a forward and a backward),
        `eval_image_forwards`, `eval_text_forwards` (full-tower equivalents)."""
        c = self.counts
        return {
            "pairs_forward_backward": round(max(c["grad_vision"], c["grad_text"]), 2),
            "eval_image_forwards": round(c["eval_vision"], 2),
            "eval_text_forwards": round(c["eval_text"], 2),
        }


@contextlib.contextmanager
def counting(model: nn.Module) -> Iterator[PassCounter]:
    """A `PassCounter` attached to `model` for the duration."""
    counter = PassCounter().attach(model)
    try:
        yield counter
    finally:
        counter.detach()


# -- activations and sizes ---------------------------------------------------------------------
def activation_bytes(model: nn.Module, loss_fn: Callable[[], torch.Tensor]) -> int:
    """Bytes of the distinct tensors autograd saves while `loss_fn()` builds its graph.

    The model's parameters (and views of them) saved for the backward are not activations and
    are left out; autocast's low-precision weight copies are counted.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[tuple[int, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    def unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    loss_holder: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        loss_holder.append(loss_fn())
    del loss_holder
    return sum(seen.values())


def tensor_bytes(tensors: Sequence[torch.Tensor] | dict[str, torch.Tensor]) -> int:
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return sum(t.numel() * t.element_size() for t in values)


def model_bytes(model: nn.Module) -> int:
    return tensor_bytes(list(model.parameters()))


def folder_bytes(path: str | os.PathLike) -> int:
    """Total bytes of the files under a folder (recursive)."""
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


# -- isolated child processes ------------------------------------------------------------------
def _child(queue: mp.Queue, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        queue.put(("ok", fn(*args, **kwargs)))
    except BaseException as error:  # report every failure, the parent decides
        queue.put(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


def run_isolated(
    fn: Callable[..., Any],
    *args: Any,
    timeout_s: float | None = None,
    isolate: bool = True,
    **kwargs: Any,
) -> Any:
    """`fn(*args, **kwargs)` in a fresh spawned process; its (picklable) return value.

    `fn` must be importable (a module-level function). Raises `RuntimeError` with the child's
    traceback if it failed, or if it died without an answer (e.g. killed for memory).
    `isolate=False` calls `fn` in this process instead (quick checks; peaks then mix).
    """
    if not isolate:
        try:
            return fn(*args, **kwargs)
        except Exception as error:
            message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
            raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed:\n{message}") from error
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, fn, args, kwargs))
    process.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:  # poll, so a child that dies without answering is seen, not waited on forever
        try:
            status, value = queue.get(timeout=1.0)
            break
        except Exception as error:  # queue.Empty: still running, dead, or out of time
            dead = not process.is_alive() and queue.empty()
            late = deadline is not None and time.monotonic() > deadline
            if dead or late:
                process.kill()
                process.join()
                raise RuntimeError(
                    f"{getattr(fn, '__name__', fn)} gave no answer (exit code "
                    f"{process.exitcode}): {'it died' if dead else 'timed out'}"
                ) from error
    process.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(fn, '__name__', fn)} failed in its child process:\n{value}")
    return value


def warm_up(model: nn.Module, processor: Any, pairs: Sequence[tuple]) -> None:
    """One small forward and backward, so first-call costs count against no method."""
    from hf_slug.data import batches, load_pairs
    from hf_slug.losses import retain_loss
    from hf_slug.towers import encode_images, encode_texts

    for _, inputs in batches(load_pairs(list(pairs)[:4]), processor, 4):
        images = encode_images(model, inputs["pixel_values"])
        texts = encode_texts(model, inputs["input_ids"], inputs["attention_mask"])
        retain_loss(images, texts, model.logit_scale).backward()
    model.zero_grad(set_to_none=True)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    import transformers

    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with contextlib.suppress(OSError):
        info["loadavg_at_start"] = os.getloadavg()
    with (
        contextlib.suppress(OSError, StopIteration),
        open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo,
    ):
        info["cpu"] = next(
            line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")
        )
    return info
