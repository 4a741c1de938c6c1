"""The Hub: resolve deltas by local path or repo id, write model cards, push delta folders.

Resolving lives in `hf_slug.resolve` (core layer, so the delta format needs nothing from here);
its names are re-exported here for compatibility. Loading goes through `huggingface_hub.snapshot_download`, so it honours `revision`, `subfolder`,
`token`, `cache_dir` and `HF_HUB_OFFLINE=1` (a populated cache then works with no network).
Pushing goes through `HfApi.create_repo(exist_ok=True)` and `HfApi.upload_folder`.

Example:
    >>> folder = resolve_delta_folder("my-org/clip-forget-ada", revision="main")  # doctest: +SKIP
    >>> push_to_hub("deltas/ada", "my-org/clip-forget-ada", private=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import string
import tempfile
import warnings
from pathlib import Path
from typing import Any

from .config import CONFIG_NAME, STACK_NAME, UnlearningConfig
from .errors import DeltaFormatError, HubError
from .io import PinnedFolder, read_consistently
from .names import folder_layout, path_argument, read_stack_index
from .resolve import (  # re-exported: `hf_slug.hub.resolve_folder` etc. keep working
    PEFT_CONFIG,
    not_a_delta_error,
    resolve_delta_folder,
    resolve_folder,
)

__all__ = [
    "PEFT_CONFIG",
    "check_repo_id",
    "delta_configs",
    "model_card",
    "not_a_delta_error",
    "push_to_hub",
    "resolve_delta_folder",
    "resolve_folder",
]

CARD_NAME = "README.md"
TEMPLATE = Path(__file__).parent / "templates" / "delta_card_template.md"
BEGIN, END = "<!-- hf_slug:begin", "<!-- hf_slug:end -->"


# -- model cards ----------------------------------------------------------------------------
def delta_configs(folder: Path) -> dict[str, UnlearningConfig]:
    """The delta configs in a folder: itself (name "") or its stack's sub-folders.

    The stack index goes through the same validated parser as `SLUGModel.load_adapter`
    (`hf_slug.names.read_stack_index`), so no entry can name a folder outside `folder`.
    """
    folder = Path(folder)

    def read() -> dict[str, UnlearningConfig]:
        with PinnedFolder(folder) as pinned:
            kind = folder_layout(pinned.is_file(CONFIG_NAME), pinned.is_file(STACK_NAME), folder)
            if kind == "delta":
                raw = pinned.read_bytes(CONFIG_NAME)
                return {"": UnlearningConfig.from_bytes(raw, folder / CONFIG_NAME)}
            if kind == "stack":
                entries = read_stack_index(pinned.read_bytes(STACK_NAME), folder / STACK_NAME)
                configs = {}
                for entry in entries:
                    with pinned.sub(entry.name) as sub:
                        raw = sub.read_bytes(CONFIG_NAME)
                    configs[entry.name] = UnlearningConfig.from_bytes(
                        raw, folder / entry.name / CONFIG_NAME
                    )
                return configs
        raise DeltaFormatError(
            f"{folder} holds no hf_slug delta ({CONFIG_NAME}) or stack ({STACK_NAME}): save one "
            "with ConceptDelta.save_pretrained or SLUGModel.save_pretrained first."
        )

    return read_consistently(read)


def model_card(folder: str | Path, repo_id: str | None = None) -> str:
    """The card for a delta (or stack) folder; an existing README.md keeps its user-written text."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    configs = delta_configs(folder)
    first = next(iter(configs.values()))
    section = _card_section(folder, configs, repo_id)
    kinds = sorted({c.concept_kind for c in configs.values()})
    tags = ["unlearning", "slug", "hf_slug", *kinds, first.model_family]
    existing = folder / CARD_NAME
    if existing.is_file():
        try:
            card = ModelCard.load(existing)
        except Exception as error:  # huggingface_hub raises ValueError / YAML errors
            raise HubError(
                f"{existing} has a malformed model card header ({error}): fix its YAML block "
                "between the --- lines, or delete the file to start a new card."
            ) from error
        data = card.data.to_dict()
        data["tags"] = sorted(set(data.get("tags") or []) | set(tags))
        data.setdefault("library_name", "hf_slug")
        if first.base_model_name_or_path:
            data.setdefault("base_model", first.base_model_name_or_path)
        text = _replace_section(card.text, section)
        return str(ModelCard(f"---\n{ModelCardData(**data).to_yaml()}\n---\n{text}"))
    data = ModelCardData(
        library_name="hf_slug",
        base_model=first.base_model_name_or_path,
        tags=tags,
    )
    return f"---\n{data.to_yaml()}\n---\n{section}\n"


def _replace_section(text: str, section: str) -> str:
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end == -1:
        return f"{section}\n\n{text.strip()}\n"
    return text[:start] + section + text[end + len(END) :]


def _card_section(folder: Path, configs: dict[str, UnlearningConfig], repo_id: str | None) -> str:
    first = next(iter(configs.values()))
    concepts = [c.concept for c in configs.values()]
    metrics = first.metrics if isinstance(first.metrics, dict) else {}
    before, after = metrics.get("before", {}), metrics.get("after", {})
    before = before if isinstance(before, dict) else {}
    after = after if isinstance(after, dict) else {}
    rows = ["| metric | before | after |", "|---|---|---|"]
    rows += [
        f"| {_text(k)} | {_text(_number(before[k]))} | {_text(_number(after.get(k)))} |"
        for k in before
    ]
    pareto = next((p for p in ("pareto.png", "pareto_front.png") if (folder / p).exists()), None)
    size = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
    source = json.dumps(repo_id or "path/to/this/folder")
    if len(configs) == 1:
        usage = (
            f"from hf_slug import SLUGModel\n\nslug = SLUGModel.from_pretrained(base_model, "
            f"{source})  # base_model: the model named above\n"
            "merged = slug.merge_and_unload()  # or keep it unmerged and stack more concepts"
        )
    else:
        usage = (
            f"from hf_slug import SLUGModel\n\nslug = SLUGModel.from_pretrained(base_model, {source})\n"
            f"slug.set_adapters({list(configs)!r}, adapter_weights=[1.0] * {len(configs)})"
        )
    values = {
        "title": f"SLUG unlearning delta: {_text(', '.join(concepts))}",
        "concept": _text(", ".join(concepts)),
        "concept_kind": _text(", ".join(sorted({c.concept_kind for c in configs.values()}))),
        "base_model": f"`{_text(first.base_model_name_or_path)}`"
        if first.base_model_name_or_path
        else "its base model (not recorded)",
        "model_family": _text(first.model_family),
        "component": _text(first.component or "—"),
        "targets": "<br>".join(f"`{_text(t)}`" for c in configs.values() for t in c.targets),
        "step": ", ".join(_steps(c) for c in configs.values()),
        "delta_format": first.delta_format,
        "delta_dtype": first.delta_dtype,
        "size": f"{size / 1e6:.2f} MB",
        "rule": _text(metrics.get("rule", "named by the user")),
        "direction": _text(metrics.get("direction", "the forget gradient (SLUG)")),
        "metrics_table": "\n".join(rows) if before else "(no metrics recorded)",
        "pareto": f"![Pareto front: importance vs alignment]({pareto})" if pareto else "",
        "usage": usage,
        "audit": _audit_section(folder, configs),
        "evaluated": "Evaluated: " + _text(", ".join(sorted(map(str, before)))) + "."
        if before
        else "",
        "data_source": _text(_data_source(metrics)),
    }
    section = string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(values).strip()
    head, body = section.split("\n", 1)  # BEGIN's line, then the body ending in END
    inner = body[: -len(END)].replace("<!--", "&lt;!--")  # no text can end the section early
    return f"{head}\n{inner}{END}"


def _text(value: Any) -> str:
    """`value` as one line of card text that cannot break a table cell or the section markers."""
    text = " ".join(str(value).splitlines())
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _data_source(metrics: dict) -> str:
    """Which data the before/after numbers come from, as `UnlearningResult.data` recorded it."""
    data = metrics.get("data")
    if isinstance(data, dict) and isinstance(data.get("description"), str):
        return data["description"]
    return "data not recorded (a delta saved before hf_slug recorded it; treat as in-sample)"


def _audit_section(folder: Path, configs: dict[str, UnlearningConfig]) -> str:
    """The audit table (`hf-slug audit`) when the folder holds one of the deltas it carries."""
    from .audit_report import AUDIT_NAME, AuditReport
    from .delta import ConceptDelta

    if not (folder / AUDIT_NAME).is_file():
        return (
            "No audit has been run on this delta. `hf-slug audit FOLDER --model BASE --images "
            "HELD_OUT --labels-file NAMES` tries held-out phrasings, name variants, image "
            "augmentations, PGD, a learned prompt and relearning, and writes its table here."
        )
    report = AuditReport.from_pretrained(folder)
    held = sorted(ConceptDelta.from_pretrained(folder / name).digest() for name in configs)
    if sorted(report.settings.get("deltas", [])) != held:
        return (
            "This folder holds an audit of other deltas than the ones it carries now (it was "
            "saved before them): run `hf-slug audit` again."
        )
    figure = (
        "\n\n![Recovery against attack budget](slug_audit.png)"
        if (folder / "slug_audit.png").is_file()
        else ""
    )
    return report.to_markdown().strip() + figure


def _steps(config: UnlearningConfig) -> str:
    """The step, or one per component for a delta that edits several (SDXL's two encoders)."""
    steps = config.component_steps
    if len(steps) > 1:
        return ", ".join(f"{name}: {_number(step, '.4g')}" for name, step in steps.items())
    return f"{config.step:.4g}"


def _number(value: Any, spec: str = ".4f") -> str:
    """A metric for the card: formatted if it is a number, else shown as it is ('—' if absent)."""
    if value is None:
        return "—"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec) if math.isfinite(value) else str(value)
    return str(value)


# -- pushing ----------------------------------------------------------------------------------
def push_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
) -> Any:
    """Upload a delta (or stack) folder with a fresh model card; return the commit info."""
    from huggingface_hub import HfApi

    folder = path_argument(folder, "folder")
    check_repo_id(repo_id)
    configs = delta_configs(folder)
    card = model_card(folder, repo_id)
    with tempfile.TemporaryDirectory(prefix="hf_slug_push_") as staging:
        staged = Path(staging) / "upload"
        skipped = _stage(folder, staged, folder)
        if skipped:
            warnings.warn(
                f"not uploading hidden entries of {folder}: {skipped[:5]} (dot files such as "
                ".env, and leftovers of interrupted saves); upload them yourself if you mean to.",
                stacklevel=2,
            )
        (staged / CARD_NAME).write_text(card, encoding="utf-8")
        concepts = ", ".join(c.concept for c in configs.values())
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=staged,
            commit_message=commit_message or f"Upload SLUG unlearning delta: {concepts}",
            revision=revision,
            repo_type="model",
        )


def check_repo_id(repo_id: Any) -> str:
    """`repo_id` if it is a valid Hub repo id (`org/name`), else HubError saying why.

    Example:
        >>> check_repo_id("my-org/clip-forget-ada")
        'my-org/clip-forget-ada'
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        if not isinstance(repo_id, str) or "/" not in repo_id:
            raise HFValidationError("it must be a str of the form org/name")
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubError(
            f"{repo_id!r} is not a valid Hub repo id ({error}): pass org/name, e.g. "
            "'my-org/clip-forget-ada' (letters, digits, '-', '_', '.'; no spaces)."
        ) from None
    return repo_id


def _stage(source: Path, staged: Path, root: Path) -> list[str]:
    """Copy the regular files and folders of `source` into `staged`; refuse anything else.

    A symlink could point outside the folder (a key, a home directory) and would be uploaded as
    the file it points to, so it is refused (HubError naming it), as are FIFOs and devices.
    Files are opened without following links, so one swapped in meanwhile is refused too.
    Hidden entries (`.env`, `.git`, an interrupted save's `.x.tmp`) are skipped; returns them.
    """
    staged.mkdir()
    skipped = []
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith("."):
            skipped.append(str(path.relative_to(root)))
            continue
        if entry.is_symlink():
            raise HubError(
                f"refusing to push {root}: {path} is a symbolic link (to {os.readlink(path)}), "
                "which would upload a file from outside the folder. Replace it with a copy of "
                "the file, or delete it."
            )
        if entry.is_dir(follow_symlinks=False):
            skipped += _stage(path, staged / entry.name, root)
            continue
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(path, flags)
        except OSError as error:
            raise HubError(
                f"refusing to push {root}: cannot open {path} as a plain file ({error}): "
                "delete it or replace it with a regular file."
            ) from None
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise HubError(
                    f"refusing to push {root}: {path} is not a regular file (a FIFO, socket or "
                    "device): delete it."
                )
            with open(staged / entry.name, "wb") as out:
                shutil.copyfileobj(handle, out)
    return skipped
