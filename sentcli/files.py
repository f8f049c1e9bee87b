"""Files written whole or not at all, and the checks before writing: what every command
that writes shares (run folders, exports, caches, plots)."""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sentcli.errors import ConfigError, DiskFullError

CACHE_ENV = "SENTCLI_CACHE"


def hash_file(h: Any, path: Path) -> None:
    """Feed a file's bytes to hash `h` (a hashlib object), a MiB at a time."""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)


def cache_root() -> Path:
    """Where computed vectors are kept (teacher vectors, search corpora): $SENTCLI_CACHE,
    else ~/.cache/sentcli."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sentcli")


@functools.cache
def umask() -> int:
    """The process umask (read once, on first use: reading it means setting it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, fsync it, then rename it over
    `path`: readers see the old file or the new one, never half of one."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; give the usual mode
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as e:
        if disk_full(e, path.parent):
            raise DiskFullError(
                f"cannot write {path}: no space left on its disk ({path.parent}); free some "
                "space, or write to another disk"
            ) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def disk_full(e: BaseException, folder: Path) -> bool:
    """Whether a failed write ran out of disk: an OSError says so; safetensors puts the OS
    error in its message; torch's zip writer only says "unexpected pos" after a short write,
    so for it the folder's free space decides."""
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    if any(s in str(e) for s in ("No space left on device", "os error 28", "Disk quota")):
        return True
    if isinstance(e, RuntimeError) and "unexpected pos" in str(e):
        try:
            return shutil.disk_usage(folder).free < 1 << 20
        except OSError:
            return False
    return False


def existing_folder(path: Path) -> Path:
    """`path` if it is a folder, else the nearest of its parents that is one (where a new
    file or folder under `path` would first land)."""
    return next(p for p in (path, *path.parents) if p.is_dir())


def check_writable(path: Path, folder: Path | None = None) -> None:
    """Refuse, before any work, an output whose folder (default: its parent) cannot take a
    new file (read-only, no permission, /proc): make and delete a temporary file there."""
    folder = path.parent if folder is None else folder
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".sentcli-", suffix=".tmp")
    except OSError as e:
        raise ConfigError(
            f"cannot write {path}: {e.strerror.lower() if e.strerror else e} in {folder}; "
            "give a path in a writable folder"
        ) from None
    os.close(fd)
    os.unlink(name)


def write_text(path: Path, text: str) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(text, encoding="utf-8")

    atomic_write(path, write)


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON (inside a folder that is written whole, `staged`)."""
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def staged(out_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `out_dir` to write a whole folder into; when the block ends
    without error it replaces `out_dir` in one rename (an old one is removed), else it is
    deleted."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes it 0700: give the usual mode
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
