"""File safety: atomic files and folders, pinned folder reads, fingerprints, checked parsers.

How a folder is saved (`atomic_folder`): everything is written into a fresh sibling folder
`.{name}.tmp-{pid}-{token}` beside the target. When it is complete, an existing target is
renamed to `.{name}.old-{pid}-{token}`, the new folder is renamed to the target, and the old one
is deleted. Between the two renames the target is briefly absent; it never holds a mix of old and
new files. A failed save deletes its temporary folder and leaves the old target untouched.
Leftover `.{name}.tmp-*` / `.{name}.old-*` folders of killed saves (their process is gone) are
deleted by the next save of that folder. Files in the old target that hf_slug did not write are
carried into the new folder (hard links where possible), so a user's README.md survives.

How a folder is read (`PinnedFolder`): the folder is opened once and every file is opened
relative to that handle, so all of them come from the same folder even if a save renames it
away meanwhile. If a save deletes the old folder before a reader has opened everything, the
reader gets `FolderReplacedError` and `read_consistently` tries again.

Example:
    >>> import torch
    >>> fingerprint(torch.zeros(2))[:12]
    'af5570f5a181'
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save_file

from .errors import DeltaFormatError

T = TypeVar("T")
_DIR_FD = os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY")
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_ACTIVE: set[str] = set()  # this process's swap folders still in use
STALE_AFTER_S = 3600.0  # where a process cannot be probed (Windows), leftovers older than this go


class FolderReplacedError(DeltaFormatError):
    """A folder was replaced by a save while it was being read (`read_consistently` retries)."""


def fingerprint(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's values as stored (dtype and shape matter, device does not)."""
    data = tensor.detach().to("cpu").contiguous()
    if data.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw bits
        data = data.view(torch.int16)
    digest = hashlib.sha256(data.numpy().tobytes())
    return digest.hexdigest()


# -- single files -----------------------------------------------------------------------------
@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Mapping) -> None:
    """Write JSON atomically (indented, keys in insertion order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_safetensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (contiguous CPU copies of the tensors)."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(data, str(tmp), metadata=dict(metadata or {}))


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning a missing, truncated or corrupt file into a clear error."""
    path = Path(path)
    if not path.is_file():
        raise DeltaFormatError(f"{path} does not exist: the folder is incomplete; save it again.")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise DeltaFormatError(
            f"{path} is not a readable safetensors file ({error}); it is truncated or corrupt. "
            "Download or save it again."
        ) from error


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise DeltaFormatError(f"{path} is not a readable safetensors file ({error}).") from error


# -- checked parsers --------------------------------------------------------------------------
def parse_json_bytes(raw: bytes, source: str | Path) -> Any:
    """Decode UTF-8 JSON, turning bad bytes, bad JSON or absurd nesting into DeltaFormatError."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DeltaFormatError(
            f"{source} is not UTF-8 text ({error}): it is corrupt or not an hf_slug file; "
            "save or download it again."
        ) from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DeltaFormatError(f"{source} is not valid JSON ({error}); save it again.") from error
    except RecursionError as error:
        raise DeltaFormatError(
            f"{source} nests JSON too deeply to read: it is not an hf_slug file; save it again."
        ) from error


def parse_safetensors_bytes(raw: bytes, source: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from safetensors bytes; a truncated or corrupt file raises DeltaFormatError."""
    try:
        return load(raw)
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as error:
        raise DeltaFormatError(
            f"{source} is not a readable safetensors file ({error}); it is truncated or corrupt. "
            "Download or save it again."
        ) from error


# -- pinned reads -------------------------------------------------------------------------------
class PinnedFolder:
    """A folder opened once; files read through it all come from that same folder.

    Where the platform cannot open files relative to a folder handle (Windows), reads go by path
    and `check_unchanged` compares the folder's identity before and after instead.
    """

    def __init__(self, path: str | Path, _fd: int | None = None) -> None:
        self.path = Path(path)
        self._fd = _fd
        try:
            if _fd is None and _DIR_FD:
                self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
            self._stat = os.stat(self.path) if self._fd is None else os.fstat(self._fd)
        except FileNotFoundError as error:
            raise missing_folder_error(self.path) from error
        except NotADirectoryError as error:
            raise DeltaFormatError(
                f"{self.path} is not a folder: pass the delta folder itself."
            ) from error

    def __enter__(self) -> PinnedFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _stat_of(self, name: str) -> os.stat_result | None:
        try:
            if self._fd is not None:
                return os.stat(name, dir_fd=self._fd)
            return os.stat(self.path / name)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def is_file(self, name: str) -> bool:
        found = self._stat_of(name)
        return found is not None and stat.S_ISREG(found.st_mode)

    def is_dir(self, name: str) -> bool:
        found = self._stat_of(name)
        return found is not None and stat.S_ISDIR(found.st_mode)

    def read_bytes(self, name: str) -> bytes:
        """The bytes of file `name` in this folder (a missing file raises DeltaFormatError)."""
        try:
            if self._fd is not None:
                handle = os.open(name, os.O_RDONLY, dir_fd=self._fd)
                with os.fdopen(handle, "rb") as file:
                    return file.read()
            return (self.path / name).read_bytes()
        except (FileNotFoundError, NotADirectoryError) as error:
            self._raise_if_replaced()
            raise DeltaFormatError(
                f"{self.path / name} does not exist: the folder is incomplete; save it again."
            ) from error
        except IsADirectoryError as error:
            raise DeltaFormatError(
                f"{self.path / name} is a folder, not a file: the folder is malformed; "
                "save it again."
            ) from error

    def sub(self, name: str) -> PinnedFolder:
        """The sub-folder `name` (a plain folder: a symbolic link is refused)."""
        if self._fd is None:
            path = self.path / name
            if path.is_symlink() or not path.is_dir():
                raise self._not_a_subfolder(name)
            return PinnedFolder(path)
        try:
            flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0)
            handle = os.open(name, flags, dir_fd=self._fd)
        except (FileNotFoundError, NotADirectoryError, OSError) as error:
            if isinstance(error, FileNotFoundError):
                self._raise_if_replaced()
            raise self._not_a_subfolder(name) from error
        return PinnedFolder(self.path / name, handle)

    def _not_a_subfolder(self, name: str) -> DeltaFormatError:
        return DeltaFormatError(
            f"{self.path / name} is not a plain sub-folder of {self.path} (missing, or a "
            "symbolic link): a saved stack keeps each adapter in a folder of its own; save the "
            "stack again or copy the adapter folder in."
        )

    def _raise_if_replaced(self) -> None:
        if self.replaced():
            raise FolderReplacedError(
                f"{self.path} was replaced by a save while it was being read: load it again."
            )

    def replaced(self) -> bool:
        """Whether the folder this handle pinned was renamed away or deleted since it was opened."""
        try:
            now = os.stat(self.path)
        except FileNotFoundError:
            return True
        if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
            return True
        return (now.st_ino, now.st_dev) != (self._stat.st_ino, self._stat.st_dev)

    def check_unchanged(self) -> None:
        """Without folder handles: raise FolderReplacedError if a save swapped the folder."""
        if self._fd is None and self.replaced():
            self._raise_if_replaced()


def read_consistently(read: Callable[[], T], attempts: int = 8) -> T:
    """Call `read`, again when a concurrent save replaced the folder it was reading."""
    for attempt in range(attempts):
        try:
            return read()
        except FolderReplacedError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.005 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def missing_folder_error(path: Path) -> DeltaFormatError:
    """The error for a folder that does not exist (a save may be replacing it right now)."""
    if any(not _is_stale(p) for p in swap_siblings(path)):
        return FolderReplacedError(
            f"{path} does not exist right now because a save is replacing it: load it again."
        )
    return DeltaFormatError(f"{path} does not exist: check the path.")


# -- atomic folders ---------------------------------------------------------------------------
def swap_siblings(target: Path) -> list[Path]:
    """The `.{name}.tmp-*` / `.{name}.old-*` folders beside `target` (in use or left over)."""
    parent = target.parent
    if not target.name or not parent.is_dir():
        return []
    prefixes = (f".{target.name}.tmp-", f".{target.name}.old-")
    return sorted(p for p in parent.iterdir() if p.name.startswith(prefixes))


def _is_stale(path: Path) -> bool:
    """Whether a swap folder belongs to no save still running."""
    if str(path) in _ACTIVE:
        return False
    pid_text = path.name.rsplit("-", 2)[-2] if path.name.count("-") >= 2 else ""
    if not pid_text.isdigit():
        return True
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # not in _ACTIVE: a save of this process that was interrupted
    if os.name == "nt":  # os.kill would terminate the process there
        try:
            return time.time() - path.lstat().st_mtime > STALE_AFTER_S
        except FileNotFoundError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False
    return False


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def clean_leftovers(target: str | Path) -> list[Path]:
    """Delete the swap folders of killed saves of `target`; return what was removed."""
    removed = []
    for path in swap_siblings(Path(target)):
        if _is_stale(path):
            _remove(path)
            removed.append(path)
    return removed


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError:
        shutil.copy2(source, destination, follow_symlinks=False)


def _carry_foreign(old: Path, new: Path, owned: set[str]) -> None:
    """Put the entries of `old` that hf_slug does not own (user files) into `new`."""
    for entry in old.iterdir():
        if entry.name in owned or (new / entry.name).exists():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(entry), str(new / entry.name))


def _lock_for(target: Path) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(target), threading.Lock())


@contextmanager
def atomic_folder(
    target: str | Path, owned: Callable[[Path], set[str]] | None = None
) -> Iterator[Path]:
    """Yield a fresh sibling folder to fill; on success it replaces `target` as a whole.

    `owned(old_target)` names the entries of the existing target that the new folder replaces;
    every other entry (a user's README.md, notes, images) is carried over. See the module
    docstring for the order of renames. On failure nothing is replaced and nothing is left over.
    """
    target = Path(target).expanduser().resolve()
    if not target.name:
        raise DeltaFormatError(f"cannot save into {target}: pass a folder below it.")
    cwd = Path.cwd().resolve()
    if cwd == target or target in cwd.parents:
        raise DeltaFormatError(
            f"cannot replace {target}: it holds the current working directory; save into a "
            "sub-folder of it, or change directory first."
        )
    if target.exists() and not target.is_dir():
        raise DeltaFormatError(f"{target} exists and is not a folder: remove it or pick another.")
    target.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    tmp = target.parent / f".{target.name}.tmp-{token}"
    old = target.parent / f".{target.name}.old-{token}"
    with _lock_for(target):
        clean_leftovers(target)
        _ACTIVE.update((str(tmp), str(old)))
        try:
            tmp.mkdir(mode=0o777)
            yield tmp
            _sync_tree(tmp)  # what this save wrote; carried files are already on disk
            if target.is_dir():
                _carry_foreign(target, tmp, owned(target) if owned else set())
            if target.is_dir():
                os.rename(target, old)
                try:
                    os.rename(tmp, target)
                except BaseException:
                    os.rename(old, target)
                    raise
                _remove(old)
            else:
                os.rename(tmp, target)
            _sync_dir(target.parent)
        finally:
            _remove(tmp)
            _ACTIVE.difference_update((str(tmp), str(old)))


def _sync_tree(folder: Path) -> None:
    """fsync every file written into `folder` so a crash cannot swap in empty files."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def _sync_dir(folder: Path) -> None:
    if os.name == "nt":  # pragma: no cover - folders cannot be fsynced there
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
