"""Atomic file writes: a temp file in the target's folder, flushed and fsynced, then os.replace.

A reader (or a run killed mid-write) sees the old file or the new one, never half of one. Used
for every output: artifacts, checkpoints, shards, emitted scripts, rendered pictures, generated
specs, measurements and profiles. A write that fails (disk full, no such folder, no permission)
is one SpecError naming the file, and leaves nothing behind.

Temp files are named `.<name>.<pid>.<random>.tmp`; one left by a killed process (its pid no
longer runs) is removed by the next write of the same file.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable

from .errors import SpecError

STALE_SECONDS = 3600      # a temp file of ours without a pid (older recurc) is stale after an hour


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True           # another thread of this process may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True           # it exists (another user's), or we cannot tell: keep the file
    return True


def remove_leftovers(path: str | os.PathLike) -> list[Path]:
    """Remove temp files that an interrupted atomic_write of `path` left; returns them."""
    path = Path(path)
    pat = re.compile(r"^\." + re.escape(path.name) + r"\.(?:(\d+)\.)?[A-Za-z0-9_]+\.tmp$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    now = time.time()
    for e in entries:
        m = pat.match(e.name)
        if not m or not e.is_file(follow_symlinks=False):
            continue
        try:
            stale = not _pid_alive(int(m.group(1))) if m.group(1) else now - e.stat().st_mtime > STALE_SECONDS
            if stale and e.stat(follow_symlinks=False).st_uid == os.getuid():
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            continue
    return removed


def atomic_write(path: str | os.PathLike, data: bytes | str | Callable[[BinaryIO], None],
                 mode: int = 0o644) -> Path:
    """Write `data` (bytes, text as UTF-8, or a function that writes to a binary file) to `path`.
    A character device in the way (`-o /dev/null`) is written through, never replaced by a file;
    a FIFO, socket or block device is refused (a FIFO without a reader would block the write)."""
    path = Path(path)
    tmp = None
    try:
        kind = _kind(path)
        if kind is not None and stat.S_ISCHR(kind):
            return _write_through(path, data)
        if kind is not None and not (stat.S_ISREG(kind) or stat.S_ISDIR(kind)):
            raise SpecError(f"cannot write {path}: it is a pipe, socket or device, not a regular file")
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_leftovers(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; these are ordinary files
        os.replace(tmp, path)
    except OSError as exc:  # disk full, read-only or missing folder, a folder in the way
        _unlink(tmp)
        raise SpecError(f"cannot write {path}: {exc.strerror or exc}") from None
    except ValueError:      # a NUL byte in the name
        _unlink(tmp)
        raise SpecError(f"cannot write {str(path)!r}: the path holds a NUL byte") from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def _kind(path: Path) -> int | None:
    """The file type bits of what `path` names now (through symlinks), None if nothing is there."""
    try:
        return stat.S_IFMT(os.stat(path).st_mode)
    except (OSError, ValueError):       # missing, or a name the OS refuses: the write reports it
        return None


def _write_through(path: Path, data: bytes | str | Callable[[BinaryIO], None]) -> Path:
    """Write to the character device at `path` itself (there is nothing to replace atomically)."""
    try:
        with open(path, "wb", buffering=0) as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
    except OSError as exc:              # /dev/full: ENOSPC
        raise SpecError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _unlink(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass
