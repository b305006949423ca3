"""The file-system boundary for user-named paths: what may be read, and names that may be written.

Reads: only regular files, opened without blocking (a FIFO would wait forever for a writer), and
bounded by the bytes actually read, not by `st_size` (0 for /dev/zero and /proc files). A refused
file's content never appears in an error.
Names: text from a spec (its name, a variant's name) becomes one path component, so a run folder
or an output file always lands inside the folder the user named.
"""
from __future__ import annotations

import io
import os
import re
import stat
from pathlib import Path

from .errors import SpecError

MAX_NAME_CHARS = 128        # a file-name component derived from a spec
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _refuse(path: str | os.PathLike, what: str, why: str, hint: str | None = None) -> SpecError:
    return SpecError(f"cannot read {what} {os.fspath(path)!s}: {why}", hint=hint)


def open_regular(path: str | os.PathLike, what: str = "file") -> io.BufferedReader:
    """A binary reader of `path` if it is a regular file; SpecError otherwise (FIFO, device,
    folder, missing, unreadable, a name with a NUL byte)."""
    try:
        # O_NONBLOCK: opening a FIFO for reading returns at once instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecError(f"{what} {os.fspath(path)} does not exist") from None
    except ValueError:                      # embedded NUL byte
        raise _refuse(repr(os.fspath(path)), what, "the path holds a NUL byte") from None
    except OSError as exc:
        raise _refuse(path, what, exc.strerror or type(exc).__name__) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe" if stat.S_ISFIFO(st.st_mode) \
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a regular file"
            raise _refuse(path, what, f"it is {kind}", "give the path of a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file at `path`, refused (SpecError) if it holds more than `limit`."""
    with open_regular(path, what) as f:
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise _refuse(path, what, exc.strerror or type(exc).__name__) from None
    if len(data) > limit:
        raise _refuse(path, what, f"it is larger than the limit of {limit:,} bytes")
    return data


def read_text(path: str | os.PathLike, limit: int, what: str = "file") -> str:
    """UTF-8 text of a regular file of at most `limit` bytes; undecodable bytes are refused without
    showing them (the file may not be what the user thinks it is)."""
    data = read_bytes(path, limit, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(path, what, f"byte {exc.start:,} is not UTF-8 text") from None


def safe_component(name: str, default: str = "unnamed") -> str:
    """`name` as one file-name component: only letters, digits and `._+-`, no leading dot (so
    never `.`, `..` or a hidden file), at most MAX_NAME_CHARS characters."""
    s = _UNSAFE.sub("-", str(name)).strip("-").lstrip(".")[:MAX_NAME_CHARS].strip("-")
    return s or default


def inside(folder: str | os.PathLike, name: str) -> Path:
    """folder / safe_component(name): a path that cannot leave `folder`."""
    return Path(folder) / safe_component(name)


def load_torch(path: str | os.PathLike, what: str = "file", map_location: object = "cpu") -> object:
    """torch.load of a regular file with weights_only=True (tensors and plain data; nothing that
    runs code). Anything torch cannot read is one SpecError naming the file, not a traceback."""
    import torch
    with open_regular(path, what) as f:
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except MemoryError:
            raise _refuse(path, what, "it does not fit in memory") from None
        except Exception as exc:  # pickle, zip, weights_only and storage errors all mean "not one"
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise _refuse(path, what, f"not a file written by torch.save ({first})") from None
